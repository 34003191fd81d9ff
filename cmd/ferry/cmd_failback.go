package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/engine"
	"github.com/ferry-dr/ferry/core/failback"
	"github.com/ferry-dr/ferry/core/server"
	"github.com/ferry-dr/ferry/core/server/client"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func init() {
	register(&command{
		name: "failback",
		summary: `Bring a failed-over VM home: replicate its running replica back to
production, switch, then commit or undo.

  ferry failback JOB VM [--to NAME]     sync: send production what differs from
                                        the replica while the replica keeps
                                        running (production, powered off, keeps
                                        what each write overwrites); run it
                                        again to send what changed since
  ferry failback JOB VM --switch        sync, then switch at once
  ferry failback switch JOB VM          stop the replica, a final short sync,
                                        start production with its own networks
  ferry failback commit JOB VM          make it permanent: production's undo
                                        data is dropped, the replica returns to
                                        replication (the next run of the job is
                                        incremental)
  ferry failback undo JOB VM            before the commit: production gets back
                                        every byte and its power state, the
                                        replica runs again as failed over
  ferry failback status [JOB [VM]]      the failbacks under way

A failover_plan's VMs at once:

  ferry failback plan NAME [--switch]   sync every failed-over VM of the plan,
                                        several at once, while the replicas run
  ferry failback plan switch NAME       sync those not synced yet, then switch
                                        group by group in the plan's order
                                        (production starts in its dependency
                                        order), each group's readiness check
                                        run against production's addresses; a
                                        VM that fails stops the switch
  ferry failback plan commit|undo NAME  commit, or undo, every VM's failback

Only what differs is sent: what the replica wrote since the failover with
what production changed after the failover's restore point, as each side's
change tracking names it; digests are compared where tracking cannot tell.
--to writes another production VM (created when it does not exist); without
it, the job's VM, created when it is gone. A command killed at any step is
finished by running it again. Needs the Failback capability on both the
job's source and target (the local, Hyper-V and vSphere plugins have it;
ferry plugins lists it). A failback holds the jobs it acts on while it
runs: a run of one of them, or another failback of one, is refused
meanwhile, naming the command that holds it. Through a
ferry server (--server or FERRY_ADDR) the server runs it.`,
		usage: "ferry [--config DIR] failback [switch|commit|undo] JOB VM [--to NAME] [--switch] [--json] | failback plan [switch|commit|undo] NAME [--switch] [--json] | failback status [JOB [VM]] [--json]",
		setup: func(fs *pflag.FlagSet) runFunc {
			to := fs.String("to", "", "write the production VM `NAME` instead of the job's VM (created when it does not exist)")
			sw := fs.Bool("switch", false, "switch to production right after the sync")
			asJSON := fs.Bool("json", false, "print JSON")
			return func(e *env, args []string) error { return runFailback(e, args, *to, *sw, *asJSON) }
		},
		complete: completeFailback,
	})
}

func completeFailback(dir string, args []string) []string {
	if len(args) == 0 {
		return append([]string{"switch", "commit", "undo", "status", "plan"}, completeJobs(dir, nil)...)
	}
	if args[0] == "plan" {
		return completeFailbackPlan(dir, args[1:])
	}
	switch args[0] {
	case "switch", "commit", "undo", "status":
		args = args[1:]
	}
	return completeJobVM(dir, args)
}

func runFailback(e *env, pos []string, to string, sw, asJSON bool) error {
	action := failback.Sync
	if len(pos) > 0 {
		switch pos[0] {
		case "plan":
			if to != "" {
				return usagef("--to applies to one VM: a plan's VMs go home to their own production VMs")
			}
			return runFailbackPlan(e, pos[1:], sw, asJSON)
		case "status":
			if to != "" || sw {
				return usagef("--to and --switch do not apply to failback status")
			}
			return runFailbackStatus(e, pos[1:], asJSON)
		case "switch", "commit", "undo":
			action, pos = failback.Action(pos[0]), pos[1:]
		}
	}
	if len(pos) != 2 {
		return usagef("name a job and a VM")
	}
	switch {
	case sw && action != failback.Sync:
		return usagef("--switch goes with a sync ('ferry failback JOB VM --switch'); 'ferry failback %s' needs none", action)
	case sw:
		action = failback.Switch
	}
	if to != "" && action != failback.Sync && action != failback.Switch {
		return usagef("--to applies when a failback begins (a sync or a switch)")
	}
	ctx := context.Background()
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		return runFailbackRemote(ctx, e, c, pos[0], pos[1], action, to, asJSON)
	}
	w, err := openWorkspace(ctx, e)
	if err != nil {
		return err
	}
	defer w.Close()
	job, err := w.job(pos[0])
	if err != nil {
		return err
	}
	vm := pos[1]
	release, err := w.holdJobs(fmt.Sprintf("ferry failback %s %s %s", action, job.Name, vm), job.Name)
	if err != nil {
		return fmt.Errorf("failback of job %q vm %q: %w", job.Name, vm, err)
	}
	defer release()
	eng, err := w.controlEngine()
	if err != nil {
		return err
	}
	res, err := eng.Failback(ctx, job, vm, action, engine.FailbackOptions{To: to})
	var refusal *failback.Error
	if errors.As(err, &refusal) && errors.Is(err, errdefs.ErrInvalidArgument) {
		return usagef("%v", err)
	}
	if asJSON && res != nil {
		if jerr := writeJSON(e, res); jerr != nil && err == nil {
			err = jerr
		}
		return err
	}
	if res != nil {
		reportFailback(e, job.Name, vm, action, res)
	}
	return err
}

// runFailbackRemote asks a ferry server to run a failback action of a VM
// and shows what it did as a run here shows it.
func runFailbackRemote(ctx context.Context, e *env, c *client.Client, job, vm string, action failback.Action, to string, asJSON bool) error {
	if err := remoteJob(ctx, c, job); err != nil {
		return err
	}
	fb, err := c.Failback(ctx, job, vm, string(action), to)
	if err != nil {
		err = remoteError(err)
	}
	if fb == nil {
		return err
	}
	if asJSON {
		if jerr := writeJSON(e, fb); jerr != nil && err == nil {
			err = jerr
		}
		return err
	}
	reportFailback(e, job, vm, action, &engine.FailbackResult{Failback: fb.Failback, Ended: fb.Ended, Steps: fb.Steps, Syncs: fb.Syncs, Production: fb.Production})
	return err
}

func writeJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// reportFailback says what the steps did and what to do next.
func reportFailback(e *env, job, vm string, action failback.Action, res *engine.FailbackResult) {
	out := e.stdout
	for _, s := range res.Syncs {
		var sent, size int64
		for _, d := range s.Disks {
			sent += d.Sent
			size += d.Size
			fmt.Fprintf(out, "  disk %d: %s, %s sent of %s (%s)\n", d.Index, d.Mode, formatBytes(d.Sent), formatBytes(d.Size), d.Why)
		}
		fmt.Fprintf(out, "synced %s/%s: %s sent for %s of disks in %.1fs\n", job, vm, formatBytes(sent), formatBytes(size), s.Seconds)
	}
	fb := res.Failback
	switch {
	case len(res.Steps) == 0 && fb != nil:
		fmt.Fprintf(out, "failback %s of %s/%s is %s already\n", fb.ID, job, vm, fb.State)
	case fb == nil && action == failback.Commit && res.Ended != nil && res.Ended.Elsewhere:
		fmt.Fprintf(out, "failback of %s/%s committed: production vm %s runs, the replica is back in replication.\nNOTE: %s\n", job, vm, res.Ended.Production, server.CommittedElsewhere(job, vm, res.Ended.Production))
	case fb == nil && action == failback.Commit:
		fmt.Fprintf(out, "failback of %s/%s committed: production runs, the replica is back in replication; the next run of job %s is incremental\n", job, vm, job)
	case fb == nil && action == failback.Undo:
		fmt.Fprintf(out, "failback of %s/%s undone: production is as it was, the replica runs failed over again\n", job, vm)
	case fb != nil && failback.State(fb.State) == failback.Synced:
		fmt.Fprintf(out, "production vm %s holds the replica's data; the replica still runs. Sync again, or switch with 'ferry failback switch %s %s'\n", fb.Production, job, vm)
	case fb != nil && failback.State(fb.State) == failback.Switched:
		fmt.Fprintf(out, "switched: production vm %s runs, the replica is off. Commit with 'ferry failback commit %s %s', or undo with 'ferry failback undo %s %s'\n", fb.Production, job, vm, job, vm)
	}
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// runFailbackStatus lists the failbacks under way.
func runFailbackStatus(e *env, pos []string, asJSON bool) error {
	if len(pos) > 2 {
		return usagef("name at most a job and a VM")
	}
	ctx := context.Background()
	var list []catalog.Failback
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		job := ""
		if len(pos) > 0 {
			if err := remoteJob(ctx, c, pos[0]); err != nil {
				return err
			}
			job = pos[0]
		}
		if list, err = c.Failbacks(ctx, job); err != nil {
			return remoteError(err)
		}
	} else {
		w, err := openWorkspace(ctx, e)
		if err != nil {
			return err
		}
		defer w.Close()
		job := ""
		if len(pos) > 0 {
			j, err := w.job(pos[0])
			if err != nil {
				return err
			}
			job = j.Name
		}
		if list, err = w.cat.Failbacks(job); err != nil {
			return err
		}
	}
	if len(pos) == 2 {
		var one []catalog.Failback
		for _, f := range list {
			if f.VM == pos[1] {
				one = append(one, f)
			}
		}
		list = one
	}
	if asJSON {
		if list == nil {
			list = []catalog.Failback{}
		}
		return writeJSON(e, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "no failback under way")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tVM\tSTATE\tPRODUCTION\tSYNCS\tSENT\tSTARTED\tID")
	for _, f := range list {
		prod := f.Production
		if f.Create {
			prod += " (created)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", f.Job, f.VM, f.State, prod, f.Syncs, formatBytes(f.Sent),
			f.Started.Local().Format("2006-01-02 15:04:05"), f.ID)
	}
	return tw.Flush()
}
