package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/server/client"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func init() {
	register(&command{
		name: "sessions",
		summary: `List the sessions of the jobs, newest first.

Each line is one session: its id, job, start, how long it took, its result,
its VMs by result and the bytes it read and sent. 'ferry session ID' shows
one whole. ferry server deletes sessions older than its --keep-sessions.`,
		usage: "ferry [--config DIR] sessions [JOB] [--limit N] [--json]",
		setup: func(fs *pflag.FlagSet) runFunc {
			limit := fs.Int("limit", 20, "at most `N` sessions (0: all)")
			asJSON := fs.Bool("json", false, "print JSON")
			return func(e *env, args []string) error { return runSessions(e, args, *limit, *asJSON) }
		},
		complete: completeJobs,
	})
	register(&command{
		name: "session",
		summary: `Show one session: its VMs, their disks, what each one did, and its notes.

The ID is as 'ferry sessions' lists it, or an unambiguous start of it.`,
		usage: "ferry [--config DIR] session ID [--json]",
		setup: func(fs *pflag.FlagSet) runFunc {
			asJSON := fs.Bool("json", false, "print JSON")
			return func(e *env, args []string) error { return runSession(e, args, *asJSON) }
		},
	})
}

func runSessions(e *env, args []string, limit int, asJSON bool) error {
	if len(args) > 1 {
		return usagef("name at most one job")
	}
	if limit < 0 {
		return usagef("--limit must be 0 or more")
	}
	ctx := context.Background()
	job := ""
	if len(args) == 1 {
		job = args[0]
	}
	var sessions []catalog.Session
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		if job != "" {
			if err := remoteJob(ctx, c, job); err != nil {
				return err
			}
		}
		if limit == 0 || limit > client.MaxSessions {
			limit = client.MaxSessions // the most the API lists at once
		}
		if sessions, err = c.Sessions(ctx, job, limit); err != nil {
			return remoteError(err)
		}
	} else {
		w, err := openWorkspace(ctx, e)
		if err != nil {
			return err
		}
		defer w.Close()
		if job != "" {
			if _, err := w.job(job); err != nil {
				return err
			}
		}
		if sessions, err = w.cat.Sessions(job, limit); err != nil {
			return err
		}
	}
	if asJSON {
		out := make([]sessionSummary, 0, len(sessions))
		for i := range sessions {
			out = append(out, sessionSummary{Session: &sessions[i], Totals: sessions[i].Totals()})
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(sessions) == 0 {
		fmt.Fprintln(e.stdout, "no sessions")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tJOB\tSTARTED\tTOOK\tRESULT\tVMS\tREAD\tSENT")
	for _, s := range sessions {
		t := s.Totals()
		took := "-"
		if !s.Ended.IsZero() {
			took = s.Ended.Sub(s.Started).Round(100 * time.Millisecond).String()
		}
		vms := fmt.Sprintf("%d ok", t.Success+t.Warning+t.Skipped)
		if t.Failed > 0 {
			vms += fmt.Sprintf(", %d failed", t.Failed)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Job, s.Started.Local().Format(time.DateTime), took, s.Result, vms, size(t.BytesRead), size(t.BytesSent))
	}
	return tw.Flush()
}

func runSession(e *env, args []string, asJSON bool) error {
	if len(args) != 1 {
		return usagef("name one session")
	}
	ctx := context.Background()
	var s *catalog.Session
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		if s, err = remoteSession(ctx, c, args[0]); err != nil {
			return err
		}
	} else {
		w, err := openWorkspace(ctx, e)
		if err != nil {
			return err
		}
		defer w.Close()
		if s, err = findSession(w.cat, args[0]); err != nil {
			return err
		}
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sessionSummary{Session: s, Totals: s.Totals()})
	}
	t := s.Totals()
	fmt.Fprintf(e.stdout, "session %s of job %s: %s\n", s.ID, s.Job, s.Result)
	fmt.Fprintf(e.stdout, "  started %s", s.Started.Local().Format(time.DateTime))
	if !s.Ended.IsZero() {
		fmt.Fprintf(e.stdout, ", took %s", s.Ended.Sub(s.Started).Round(100*time.Millisecond))
	}
	fmt.Fprintf(e.stdout, "; read %s, sent %s, wrote %s\n", size(t.BytesRead), size(t.BytesSent), size(t.BytesWritten))
	if s.Error != "" {
		fmt.Fprintf(e.stdout, "  error: %s\n", s.Error)
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(e.stdout, "  warning: %s\n", warn)
	}
	if len(s.Notes) > 0 {
		fmt.Fprintln(e.stdout, "  notes:")
		for _, n := range s.Notes {
			who := ""
			if n.VM != "" {
				who = n.VM + ": "
			}
			fmt.Fprintf(e.stdout, "    %s %s%s\n", n.Time.Local().Format(time.TimeOnly), who, n.Message)
		}
	}
	for _, vm := range s.VMs {
		fmt.Fprintf(e.stdout, "  vm %s: %s", vm.VM, vm.Result)
		if vm.RestorePoint != "" {
			fmt.Fprintf(e.stdout, ", restore point %s", vm.RestorePoint)
		}
		fmt.Fprintln(e.stdout)
		if vm.Error != "" {
			fmt.Fprintf(e.stdout, "    error: %s\n", vm.Error)
		}
		for _, d := range vm.Disks {
			line := fmt.Sprintf("    disk %d: %s, read %s, sent %s, wrote %s", d.Index, d.Mode, size(d.BytesRead), size(d.BytesSent), size(d.BytesWritten))
			if d.SourceProxy != "" {
				line += fmt.Sprintf(", proxies %s > %s", d.SourceProxy, d.TargetProxy)
			}
			if d.Busy != nil {
				line += "; busy: " + d.Busy.String()
			}
			if d.Error != "" {
				line += "; error: " + d.Error
			}
			fmt.Fprintln(e.stdout, line)
		}
	}
	return nil
}

// findSession finds a session by its id or an unambiguous start of it.
func findSession(cat *catalog.Catalog, id string) (*catalog.Session, error) {
	if s, err := cat.Session(id); err == nil {
		return s, nil
	}
	all, err := cat.Sessions("", 0)
	if err != nil {
		return nil, err
	}
	return sessionStartingWith(all, id)
}

// remoteSession finds a session of a ferry server as findSession does,
// among the newest client.MaxSessions for a start of an id.
func remoteSession(ctx context.Context, c *client.Client, id string) (*catalog.Session, error) {
	s, err := c.Session(ctx, id)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, remoteError(err)
	}
	all, err := c.Sessions(ctx, "", client.MaxSessions)
	if err != nil {
		return nil, remoteError(err)
	}
	return sessionStartingWith(all, id)
}

// sessionStartingWith picks the one session whose id starts with id.
func sessionStartingWith(all []catalog.Session, id string) (*catalog.Session, error) {
	var match []catalog.Session
	for _, s := range all {
		if strings.HasPrefix(s.ID, id) {
			match = append(match, s)
		}
	}
	switch len(match) {
	case 0:
		return nil, fmt.Errorf("no session %q ('ferry sessions' lists them)", id)
	case 1:
		return &match[0], nil
	}
	return nil, usagef("%q starts %d sessions' ids: give more of it", id, len(match))
}
