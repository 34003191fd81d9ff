package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func init() {
	register(&command{
		name: "points",
		summary: `List the restore points of a job's replicas, oldest first.

Each point shows its id (to pass to 'ferry failover --point', whole or
enough of its start to name one point), the VM, when it was taken, and
OWN SIZE: the storage the point holds on its own, not counting the data it
shares with other points; CONSISTENCY: application when the guest was
quiesced for it, crash when not. Replicas the target no longer had (deleted
or replaced) are listed after, as gone, with their points' count.`,
		usage: "ferry [--config DIR] points [--json] JOB [VM]",
		setup: func(fs *pflag.FlagSet) runFunc {
			asJSON := fs.Bool("json", false, "print JSON")
			return func(e *env, args []string) error { return runPoints(e, args, *asJSON) }
		},
		complete: completeJobVM,
	})
}

func runPoints(e *env, args []string, asJSON bool) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("name a job, and optionally a VM")
	}
	name, vm := args[0], ""
	if len(args) == 2 {
		vm = args[1]
	}
	ctx := context.Background()
	var points []catalog.RestorePoint
	var gone []catalog.GoneReplica
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		if err := remoteJob(ctx, c, name); err != nil {
			return err
		}
		points, err = c.Points(ctx, name, vm)
		if errors.Is(err, errdefs.ErrNotFound) {
			return usagef("%v", err) // the VM: as here
		}
		if err != nil {
			return remoteError(err)
		}
		if !asJSON {
			if gone, err = c.GoneReplicas(ctx, name); err != nil {
				return remoteError(err)
			}
		}
	} else {
		w, err := openWorkspace(ctx, e)
		if err != nil {
			return err
		}
		defer w.Close()
		job, err := w.job(name)
		if err != nil {
			return err
		}
		if vm != "" && !contains(job.VMs, vm) {
			if _, err := w.cat.Replica(job.Name, vm); err != nil {
				return usagef("job %q has no VM %q", job.Name, vm)
			}
		}
		if points, err = w.cat.RestorePoints(job.Name, vm); err != nil {
			return err
		}
		if !asJSON {
			if gone, err = w.cat.GoneReplicas(job.Name); err != nil {
				return err
			}
		}
	}
	if asJSON {
		if points == nil {
			points = []catalog.RestorePoint{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(points)
	}
	gone = slices.DeleteFunc(gone, func(g catalog.GoneReplica) bool { return vm != "" && g.Replica.VM != vm })
	if len(points) == 0 && len(gone) == 0 {
		fmt.Fprintf(e.stdout, "job %s has no restore points yet; run 'ferry run %s'\n", name, name)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	if len(points) > 0 {
		fmt.Fprintln(tw, "ID\tVM\tCREATED\tOWN SIZE\tCONSISTENCY\tSESSION")
		for _, p := range points {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.VM, p.Created.Local().Format(time.DateTime), size(p.Size), orDash(p.Consistency), p.Session)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Replicas the target no longer had: their points are gone with them.
	for _, g := range gone {
		fmt.Fprintf(e.stdout, "gone: replica %s (id %s) of %s, with %s, since %s: %s\n",
			g.Replica.ReplicaName, g.Replica.ReplicaID, g.Replica.VM, count(len(g.Points), "restore point"), g.Gone.Local().Format(time.DateTime), g.Why)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
