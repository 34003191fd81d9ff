package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/core/engine"
	"github.com/ferry-dr/ferry/sdk"
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
                                       replication
  ferry failover plan NAME             fail a failover_plan's VMs over, group
      [--point latest|TIME]            by group in dependency order, each group
                                       checked ready before the next; to the
                                       newest points, or the newest at or
                                       before TIME
  ferry failover plan undo|commit NAME undo, or make permanent, the failover
                                       of every VM of the plan that is failed
                                       over

Test failover (a rehearsal: the replicas, their restore points and
replication are never touched):

  ferry failover plan NAME --test      start a disposable test VM of each VM of
      [--point latest|TIME]            the plan from its restore point, in the
      [--keep DURATION]                isolated networks (the plan's
                                       test_network_map, else the target's
                                       isolated network), group by group; run
                                       the readiness checks against them; report
                                       the result and the recovery time; then
                                       remove them (after --keep); jobs go on
                                       replicating meanwhile
  ferry failover JOB VM --test         the same for one VM
      [--point ID] [--keep DURATION]
  ferry failover plan NAME --test --cleanup
  ferry failover JOB VM --test --cleanup
                                       remove the test VMs a killed test left
                                       (each test removes them first too)`,
		usage: "ferry [--config DIR] failover [undo|commit] JOB VM [--point ID] | failover plan [undo|commit] NAME [--point latest|TIME] | failover [plan NAME | JOB VM] --test [--keep DURATION] [--cleanup]",
		setup: func(fs *pflag.FlagSet) runFunc {
			point := fs.String("point", "", "the restore point `ID` to fail over to, or an unambiguous start of it (default: the newest)")
			var t testFlags
			fs.BoolVar(&t.test, "test", false, "rehearse the failover with test VMs in isolated networks, then remove them")
			fs.DurationVar(&t.keep, "keep", 0, "with --test: keep the test VMs running this long (e.g. 30m) before removing them")
			fs.BoolVar(&t.cleanup, "cleanup", false, "with --test: only remove the test VMs an earlier, killed test left behind")
			return func(e *env, args []string) error { return runFailover(e, args, *point, t) }
		},
		complete: completeFailover,
	})
}

func runFailover(e *env, pos []string, point string, t testFlags) error {
	if err := t.check(pos); err != nil {
		return err
	}
	if t.test {
		return runTestFailover(e, pos, point, t)
	}
	if len(pos) > 0 && pos[0] == "plan" {
		return runFailoverPlan(e, pos[1:], point)
	}
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
	job, vm := pos[0], pos[1]
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		if err := remoteJob(ctx, c, job); err != nil {
			return err
		}
		fo, err := c.Failover(ctx, job, vm, action, point)
		if err != nil {
			return remoteError(err) // a point that names none: 2, as here
		}
		report(e, job, vm, action, &sdk.Replica{Name: fo.Replica, State: fo.State, FailoverPoint: fo.FailoverPoint,
			VM: sdk.VM{PowerState: fo.PowerState, NICs: fo.NICs}})
		return nil
	}
	w, err := openWorkspace(ctx, e)
	if err != nil {
		return err
	}
	defer w.Close()
	j, err := w.job(job)
	if err != nil {
		return err
	}
	eng, err := w.controlEngine()
	if err != nil {
		return err
	}
	r, err := eng.Failover(ctx, j, vm, engine.FailoverAction(action), point)
	var pe *engine.PointError
	if errors.As(err, &pe) {
		return usagef("%v", pe)
	}
	if err != nil {
		return err
	}
	report(e, job, vm, action, r)
	return nil
}

func report(e *env, job, vm, action string, r *sdk.Replica) {
	switch action {
	case "start":
		fmt.Fprintf(e.stdout, "%s failed over to replica %s (restore point %s); power: %s\n", vm, r.Name, r.FailoverPoint, orDash(r.VM.PowerState))
		for _, n := range r.VM.NICs {
			fmt.Fprintf(e.stdout, "  nic %d: network %q, addresses %s, gateway %s\n", n.Index, n.Network, strings.Join(n.Addresses, ", "), orDash(n.Gateway))
		}
		fmt.Fprintf(e.stdout, "undo with 'ferry failover undo %s %s', or make it permanent with 'ferry failover commit %s %s'\n", job, vm, job, vm)
	case "undo":
		fmt.Fprintf(e.stdout, "failover of %s undone: replica %s is %s again; replication resumes with the next run\n", vm, r.Name, r.State)
	case "commit":
		fmt.Fprintf(e.stdout, "failover of %s committed: %s is now the production VM and has left job %s; remove %s from the job\n", vm, r.Name, job, vm)
	}
}
