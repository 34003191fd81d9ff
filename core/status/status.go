package status

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Job is the status of one job; its JSON is `ferry status --json`'s
// (docs/cli.md).
type Job struct {
	Job      string `json:"job"`
	Schedule string `json:"schedule,omitempty"`
	// Scheduled says whether something runs the job at its schedule:
	// ScheduledBy what (a ferry server), NextRun when, if known. When
	// nothing does, the job runs only when told to ('ferry run').
	Scheduled   bool             `json:"scheduled"`
	ScheduledBy string           `json:"scheduled_by,omitempty"`
	NextRun     *time.Time       `json:"next_run,omitempty"`
	LastSession *catalog.Session `json:"last_session,omitempty"`
	// RPO is the job's rpo ("4h"); "" when it has none. Each VM then
	// says whether its newest restore point is older (RPOBreached).
	RPO string `json:"rpo,omitempty"`
	VMs []VM   `json:"vms"`
	// FailoverPlans are the failover plans that hold a VM of the job,
	// by name, each with its last test (see AttachPlans): a test that
	// failed before it started a test VM is no VM's last test, and shows
	// here.
	FailoverPlans []Plan `json:"failover_plans,omitempty"`
}

// AttachPlans gives each job the plans of plans that hold one of its
// VMs, as cfg declares them: `ferry status --json` stays a list of jobs
// and carries each plan's last test.
func AttachPlans(jobs []Job, plans []Plan, cfg map[string]*config.FailoverPlan) {
	for i := range jobs {
		for _, p := range plans {
			fp := cfg[p.Plan]
			if fp == nil {
				continue
			}
			holds := false
			for _, g := range fp.Groups {
				for _, vm := range g.VMs {
					holds = holds || vm.Job == jobs[i].Job
				}
			}
			if holds {
				jobs[i].FailoverPlans = append(jobs[i].FailoverPlans, p)
			}
		}
	}
}

// VM is the state of one VM's replica and its restore points.
type VM struct {
	VM            string     `json:"vm"`
	Replica       string     `json:"replica,omitempty"`
	State         string     `json:"state"`
	FailoverPoint string     `json:"failover_point,omitempty"`
	RestorePoints int        `json:"restore_points"`
	Newest        *time.Time `json:"newest_point,omitempty"`
	// LastTest is the last test failover that started a test VM of the
	// VM, of a plan or of the VM alone.
	LastTest *catalog.VMTest `json:"last_test,omitempty"`
	// RPOBreached is set, for a job with an rpo, while the VM's newest
	// restore point is older than it, or the VM has none (see Job.CheckRPO).
	RPOBreached bool `json:"rpo_breached,omitempty"`
	// Failback is the failback of the VM under way (`ferry failback`),
	// nil when there is none.
	Failback *Failback `json:"failback,omitempty"`
}

// Failback is how far the failback of a VM went: its state (syncing,
// synced, switching, starting, switched, committing, undoing), since
// when, and the production VM it writes.
type Failback struct {
	ID    string `json:"id"`
	State string `json:"state"`
	// Production is the production VM written; Created says the failback
	// created it (it did not exist, or --to named a new one).
	Production string `json:"production"`
	Created    bool   `json:"created,omitempty"`
	// Since is when the failback last changed state or synced; Started
	// when it began.
	Since   time.Time `json:"since"`
	Started time.Time `json:"started"`
	// Syncs completed, the bytes they sent, and when the last one ended.
	Syncs    int        `json:"syncs"`
	Sent     int64      `json:"sent_bytes"`
	LastSync *time.Time `json:"last_sync,omitempty"`
}

// FailbackOf is the status of the failback f.
func FailbackOf(f *catalog.Failback) *Failback {
	out := &Failback{ID: f.ID, State: f.State, Production: f.Production, Created: f.Create, Since: f.Updated, Started: f.Started, Syncs: f.Syncs, Sent: f.Sent}
	if f.LastSync != nil {
		end := f.LastSync.At.Add(time.Duration(f.LastSync.Seconds * float64(time.Second)))
		out.LastSync = &end
	}
	return out
}

// CheckRPO sets, for a job with an rpo, each VM's RPOBreached as of now:
// its newest restore point is older than the rpo, or it has none yet. A
// ferry server's alarms (GET /v1/rpo) count a VM without a point from
// when the server began watching it instead, and override this in its
// GET /v1/status.
func (st *Job) CheckRPO(rpo time.Duration, now time.Time) {
	if rpo <= 0 {
		return
	}
	st.RPO = shortDuration(rpo)
	for i := range st.VMs {
		v := &st.VMs[i]
		v.RPOBreached = v.Newest == nil || now.Sub(*v.Newest) > rpo
	}
}

// shortDuration writes a duration as a configuration does: "4h", "1h30m".
func shortDuration(d time.Duration) string {
	s := d.String() // 4h0m0s, 1h30m0s, 30m0s, 1m30s, 45s
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Plan is a failover plan's last test, and its next scheduled one.
type Plan struct {
	Plan string `json:"plan"`
	// LastTest is nil when the plan was never tested (or its results
	// were not kept here).
	LastTest *catalog.TestResult `json:"last_test,omitempty"`
	// TestSchedule is the plan's test_schedule, "" when it has none;
	// NextTest is when a ferry server tests it next, nil when none does
	// (or it is not known here). Plans leaves both to its caller.
	TestSchedule string     `json:"test_schedule,omitempty"`
	NextTest     *time.Time `json:"next_test,omitempty"`
}

// Plans reads the last test of each of plans, in the order given, in one
// read transaction of cat.
func Plans(cat *catalog.Catalog, plans []string) ([]Plan, error) {
	out := []Plan{}
	err := cat.View(func(tx *catalog.Tx) error {
		for _, name := range plans {
			p := Plan{Plan: name}
			rs, err := tx.TestResults(name, 1)
			if err != nil {
				return err
			}
			if len(rs) > 0 {
				p.LastTest = &rs[0]
			}
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// NoReplica is the State of a VM that has no replica yet.
const NoReplica = "no replica yet"

// Scheduler says what runs a job at its schedule ("" when nothing does)
// and when it will run it next (the zero time when that is not known).
type Scheduler func(job *config.Job) (by string, next time.Time)

// Unscheduled is the Scheduler of jobs that nothing runs at their
// schedules.
func Unscheduled(*config.Job) (string, time.Time) { return "", time.Time{} }

// ScheduledBy is the Scheduler of jobs that by runs at their schedules
// (a ferry server, as seen from elsewhere): the scheduled ones are run by
// it, at times next says (nil: not known here).
func ScheduledBy(by string, next func(job string) time.Time) Scheduler {
	return func(j *config.Job) (string, time.Time) {
		if j.Schedule.IsZero() {
			return "", time.Time{}
		}
		if next == nil {
			return by, time.Time{}
		}
		return by, next(j.Name)
	}
}

// Jobs reads the status of jobs in one read transaction of cat: a
// consistent picture, and one open of the catalog, which a running session
// writes to now and then. The jobs' RPOs are checked as of now (see
// Job.CheckRPO).
func Jobs(cat *catalog.Catalog, jobs []*config.Job, sched Scheduler, now time.Time) ([]Job, error) {
	out := []Job{}
	err := cat.View(func(tx *catalog.Tx) error {
		for _, j := range jobs {
			st, err := Of(tx, j, sched)
			if err != nil {
				return err
			}
			st.CheckRPO(j.RPO, now)
			out = append(out, st)
		}
		return nil
	})
	return out, err
}

// Of reads the status of job; sched says what runs it at its schedule, if
// anything does, and when next.
func Of(tx *catalog.Tx, job *config.Job, sched Scheduler) (Job, error) {
	name := job.Name
	st := Job{Job: name, VMs: []VM{}}
	if !job.Schedule.IsZero() {
		st.Schedule = job.Schedule.String()
	}
	if by, next := sched(job); by != "" {
		st.Scheduled, st.ScheduledBy = true, by
		if !next.IsZero() {
			st.NextRun = &next
		}
	}
	ss, err := tx.Sessions(name, 1)
	if err != nil {
		return st, err
	}
	if len(ss) > 0 {
		st.LastSession = &ss[0]
	}
	vms := job.VMs
	if job.Selects() {
		// The VMs its selectors picked are known by their replicas;
		// status does not ask the source.
		vms = slices.Clone(job.VMs)
		reps, err := tx.Replicas(name)
		if err != nil {
			return st, err
		}
		for _, r := range reps {
			if !slices.Contains(vms, r.VM) {
				vms = append(vms, r.VM)
			}
		}
	}
	for _, vm := range vms {
		vs := VM{VM: vm, State: NoReplica}
		r, err := tx.Replica(name, vm)
		switch {
		case err == nil:
			vs.Replica, vs.State, vs.FailoverPoint = r.ReplicaName, string(r.State), r.FailoverPoint
		case !errors.Is(err, errdefs.ErrNotFound):
			return st, err
		}
		ps, err := tx.RestorePoints(name, vm)
		if err != nil {
			return st, err
		}
		if len(ps) > 0 {
			vs.RestorePoints = len(ps)
			newest := ps[len(ps)-1].Created
			vs.Newest = &newest
		}
		if vs.LastTest, err = tx.LastTest(name, vm); err != nil {
			return st, err
		}
		switch fb, err := tx.Failback(name, vm); {
		case err == nil:
			vs.Failback = FailbackOf(fb)
		case !errors.Is(err, errdefs.ErrNotFound):
			return st, err
		}
		st.VMs = append(st.VMs, vs)
	}
	return st, nil
}
