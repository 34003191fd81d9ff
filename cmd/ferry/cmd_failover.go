package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/engine"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func init() {
	register(&command{
		name: "failover",
		summary: `Fail a VM over to its replica, undo a failover, or make it permanent.

  ferry failover JOB VM [--point ID]   start the replica from a restore point
                                       (the newest by default; ID as 'ferry
                                       points' shows it, or enough of its start
                                       to name one), with the job's network map
                                       and re-IP rules applied
  ferry failover undo JOB VM           stop the replica and return it to its
                                       state before the failover; replication
                                       resumes, no restore point is lost
  ferry failover commit JOB VM         make the failover permanent: the replica
                                       becomes the production VM and leaves
                                       replication`,
		usage: "ferry [--config DIR] failover [undo|commit] JOB VM [--point ID]",
		setup: func(fs *pflag.FlagSet) runFunc {
			point := fs.String("point", "", "the restore point `ID` to fail over to, or an unambiguous start of it (default: the newest)")
			return func(e *env, args []string) error { return runFailover(e, args, *point) }
		},
		complete: completeFailover,
	})
}

func runFailover(e *env, pos []string, point string) error {
	action := "start"
	if len(pos) > 0 && (pos[0] == "undo" || pos[0] == "commit") {
		action, pos = pos[0], pos[1:]
	}
	if len(pos) != 2 {
		return usagef("name a job and a VM")
	}
	if action != "start" && point != "" {
		return usagef("--point only applies when starting a failover")
	}
	ctx := context.Background()
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
	rec, err := w.cat.Replica(job.Name, vm)
	if errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("job %q vm %q has no replica yet; run the job first", job.Name, vm)
	}
	if err != nil {
		return err
	}
	if point != "" {
		points, err := w.cat.RestorePoints(job.Name, vm)
		if err != nil {
			return err
		}
		if point, err = matchPoint(points, point); err != nil {
			return usagef("job %q vm %q: %v", job.Name, vm, err)
		}
	}
	tgt, err := w.target(ctx, job)
	if err != nil {
		return fmt.Errorf("target %s: %w", job.Target.Address(), err)
	}
	var r *sdk.Replica
	switch action {
	case "start":
		r, err = tgt.Failover(ctx, sdk.FailoverRequest{Replica: rec.ReplicaID, Point: point, Network: engine.NetworkConfig(job)})
	case "undo":
		r, err = tgt.UndoFailover(ctx, rec.ReplicaID)
	case "commit":
		r, err = tgt.CommitFailover(ctx, rec.ReplicaID)
	}
	if err != nil {
		err = fmt.Errorf("job %q vm %q: failover %s: %w", job.Name, vm, action, err)
		// The target may have finished an interrupted change on the way
		// (an undo a kill cut short): the catalog follows what it says.
		if cur, gerr := tgt.GetReplica(ctx, rec.ReplicaID); gerr == nil && (cur.State != rec.State || cur.FailoverPoint != rec.FailoverPoint) {
			was := rec.State
			rec.State, rec.FailoverPoint, rec.Updated = cur.State, cur.FailoverPoint, time.Now().UTC()
			if perr := w.cat.PutReplica(rec); perr == nil {
				err = fmt.Errorf("%w; the target has the replica %s (the catalog said %s), and the catalog now says so too", err, cur.State, was)
			}
		}
		return err
	}
	rec.State, rec.FailoverPoint, rec.Updated = r.State, r.FailoverPoint, time.Now().UTC()
	if err := w.cat.PutReplica(rec); err != nil {
		return fmt.Errorf("record the replica's state: %w", err)
	}
	report(e, job, vm, action, r)
	return nil
}

func report(e *env, job *config.Job, vm, action string, r *sdk.Replica) {
	switch action {
	case "start":
		fmt.Fprintf(e.stdout, "%s failed over to replica %s (restore point %s); power: %s\n", vm, r.Name, r.FailoverPoint, orDash(r.VM.PowerState))
		for _, n := range r.VM.NICs {
			fmt.Fprintf(e.stdout, "  nic %d: network %q, addresses %s, gateway %s\n", n.Index, n.Network, strings.Join(n.Addresses, ", "), orDash(n.Gateway))
		}
		fmt.Fprintf(e.stdout, "undo with 'ferry failover undo %s %s', or make it permanent with 'ferry failover commit %s %s'\n", job.Name, vm, job.Name, vm)
	case "undo":
		fmt.Fprintf(e.stdout, "failover of %s undone: replica %s is %s again; replication resumes with the next run\n", vm, r.Name, r.State)
	case "commit":
		fmt.Fprintf(e.stdout, "failover of %s committed: %s is now the production VM and has left job %s; remove %s from the job\n", vm, r.Name, job.Name, vm)
	}
}

// matchPoint finds the restore point an argument names: its id, or the
// start of exactly one id. The error lists the ids there are, or those the
// start fits.
func matchPoint(points []catalog.RestorePoint, arg string) (string, error) {
	var fits []string
	for _, p := range points {
		if p.ID == arg {
			return p.ID, nil
		}
		if strings.HasPrefix(p.ID, arg) {
			fits = append(fits, p.ID)
		}
	}
	switch {
	case len(fits) == 1:
		return fits[0], nil
	case len(fits) > 1:
		return "", fmt.Errorf("restore point %q is ambiguous: it starts %s", arg, strings.Join(fits, ", "))
	case len(points) == 0:
		return "", fmt.Errorf("no restore point %q: there are no restore points", arg)
	}
	ids := make([]string, len(points))
	for i, p := range points {
		ids[i] = fmt.Sprintf("%s (%s)", p.ID, p.Created.Local().Format(time.DateTime))
	}
	return "", fmt.Errorf("no restore point %q; the points are, oldest first: %s", arg, strings.Join(ids, ", "))
}
