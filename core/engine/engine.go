package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/core/proxy"
	"github.com/ferry-dr/ferry/core/traffic"
	"github.com/ferry-dr/ferry/sdk"
)

// Components configures the plugin components a job names.
type Components interface {
	Source(ctx context.Context, b *config.PluginBlock) (sdk.Source, sdk.Capabilities, error)
	Target(ctx context.Context, b *config.PluginBlock) (sdk.Target, sdk.Capabilities, error)
	// Repository configures the job's repository; b is nil when the job
	// names none and the default repository is meant.
	Repository(ctx context.Context, b *config.PluginBlock) (sdk.Repository, error)
}

// Catalog is what the engine reads and records of sessions, replicas,
// restore points and jobs: a *catalog.Catalog, or another store that keeps
// the same promises (each call one transaction; CommitPoint atomic).
type Catalog interface {
	BeginSession(job string) (*catalog.Session, error)
	SaveSession(s *catalog.Session) error
	SaveSessionVM(id string, vm catalog.VMResult) error
	Replica(job, vm string) (*catalog.Replica, error)
	Replicas(job string) ([]catalog.Replica, error)
	PutReplica(r *catalog.Replica) error
	RetireReplica(job, vm, why string) (*catalog.GoneReplica, error)
	RestorePoints(job, vm string) ([]catalog.RestorePoint, error)
	ReplaceRestorePoints(job, vm string, points []catalog.RestorePoint) error
	// CommitPoint records a replica and its new restore point together.
	CommitPoint(r *catalog.Replica, p *catalog.RestorePoint) error
	JobState(job string) (*catalog.JobState, error)
	PutJobState(s *catalog.JobState) error
}

var _ Catalog = (*catalog.Catalog)(nil)

// Engine runs sessions of jobs.
type Engine struct {
	Components Components
	Catalog    Catalog
	Log        hclog.Logger
	// Events receives progress; it is called from several goroutines and
	// must be quick. Nil discards.
	Events func(Event)
	// Link is what lies between the data movers; it picks the codec of
	// compression "auto".
	Link datamover.Link
	// Clock gives the time; time.Now when nil. The wait between a
	// session's attempts at its VMs (a job's retry block) runs on the
	// runtime's timers, not on Clock: tests run it in a testing/synctest
	// bubble.
	Clock func() time.Time
	// Hook, when set, is called at each step of a VM's commit sequence,
	// before the step's effects are visible to the next. Tests use it to
	// kill the process at a chosen step and prove the invariants hold.
	Hook func(step Step, vm string)
	// Proxies runs the disk tasks of jobs on proxies; nil moves every
	// disk inside this process. A job uses proxies when Proxies is set
	// and the configuration declares any.
	Proxies Proxies
	// Traffic holds the traffic rules and their rates now; nil when there
	// are none. Disks moved in this process draw on the rules covering
	// the link from the source's site to the target's.
	Traffic *traffic.Registry

	notesMu sync.Mutex
	notes   map[string]*sessionNotes // by session, while it runs
}

// Proxies runs disk tasks on proxies (core/proxy.Pool).
type Proxies interface {
	// Greet reaches the proxies named (all when none are) and returns why
	// each one that cannot be used cannot.
	Greet(ctx context.Context, names []string) map[string]error
	// GreetSince is Greet, except that a proxy whose last hello answered
	// within fresh is not asked again.
	GreetSince(ctx context.Context, names []string, fresh time.Duration) map[string]error
	// Probe asks, ahead of placing a VM's disks, how the proxies reach
	// them (placing waits for the answers).
	Probe(ctx context.Context, t proxy.Task)
	Run(ctx context.Context, t proxy.Task) (proxy.Result, error)
	// Control returns an instance of a plugin block whose calls run on a
	// proxy of site first, then on another of names (any when empty),
	// with its capabilities and the proxy's name; moved is told when
	// later calls go to another proxy.
	Control(ctx context.Context, names []string, site string, kind sdk.Kind, b proxy.Block, moved func(string)) (any, sdk.Capabilities, string, error)
}

// Step names a point in a VM's run, for Hook.
type Step string

// The steps of a VM's run, in order. When a proxy relays the target's
// calls (and knows CommitPoint), the old points retention dropped are
// deleted already at StepPointCreated: the proxy deletes them in the
// exchange that made the point, once the point exists. The catalog still
// lists them until StepRetentionDone.
const (
	StepSnapshotted   Step = "snapshotted"    // the source snapshot exists
	StepMoving        Step = "moving"         // a disk is half moved
	StepMoved         Step = "moved"          // every disk is in the replica's working state
	StepPointCreated  Step = "point-created"  // the target's restore point exists (behind a proxy, the dropped ones are gone)
	StepCataloged     Step = "cataloged"      // the catalog lists the point
	StepSnapshotGone  Step = "snapshot-gone"  // the source snapshot is removed
	StepRetentionDone Step = "retention-done" // old points are deleted, and the catalog agrees with the target
)

func (e *Engine) hook(step Step, vm string) {
	if e.Hook != nil {
		e.Hook(step, vm)
	}
}

// EventKind says what an Event reports.
type EventKind int

const (
	SessionStarted EventKind = iota
	VMStarted
	DiskStarted
	DiskProgress
	DiskFinished
	VMFinished
	SessionFinished
	Notice // something the operator should read
)

// Event is progress of a session.
type Event struct {
	Kind    EventKind
	Session string
	Job     string
	VM      string
	Disk    int
	Mode    catalog.Mode
	Lane    catalog.Lane
	Done    int64 // bytes of the disk range handled so far
	Total   int64 // bytes of the disk range to handle
	Message string
	// Busy is how busy each stage of a finished disk's data path was.
	Busy *catalog.Busy
	Err  error
	// Result is a VM's result, in VMFinished events, and the session's in
	// SessionFinished.
	Result catalog.Result
	// Attempt counts the tries at a VM in this session, from 1: in
	// VMStarted (1), in VMFinished (the VM's last attempt) and in the
	// notices of a VM's retries (the attempt they are about).
	Attempt int
	Time    time.Time
}

func (e *Engine) now() time.Time {
	if e.Clock != nil {
		return e.Clock()
	}
	return time.Now()
}

func (e *Engine) emit(ev Event) {
	ev.Time = e.now()
	if ev.Kind == Notice && ev.Session != "" {
		e.keepNote(ev)
	}
	if e.Events != nil {
		e.Events(ev)
	}
}

// keepNote keeps a notice for its session's record (catalog.Session.Notes).
func (e *Engine) keepNote(ev Event) {
	e.notesMu.Lock()
	defer e.notesMu.Unlock()
	if e.notes == nil {
		e.notes = map[string]*sessionNotes{}
	}
	n := e.notes[ev.Session]
	if n == nil {
		n = &sessionNotes{}
		e.notes[ev.Session] = n
	}
	if len(n.kept) < catalog.MaxNotes {
		n.kept = append(n.kept, catalog.Note{Time: ev.Time.UTC(), VM: ev.VM, Message: ev.Message})
	} else {
		n.dropped++
	}
}

// takeNotes returns the notes kept for a session and forgets them.
func (e *Engine) takeNotes(session string) []catalog.Note {
	e.notesMu.Lock()
	defer e.notesMu.Unlock()
	n := e.notes[session]
	delete(e.notes, session)
	if n == nil {
		return nil
	}
	if n.dropped > 0 {
		n.kept = append(n.kept, catalog.Note{Time: e.now().UTC(), Message: fmt.Sprintf("%d more notes were not kept", n.dropped)})
	}
	return n.kept
}

// sessionNotes are the notices of one running session.
type sessionNotes struct {
	kept    []catalog.Note
	dropped int
}

func (e *Engine) log() hclog.Logger {
	if e.Log == nil {
		return hclog.NewNullLogger()
	}
	return e.Log
}

// Run runs one session of job now and returns it. The returned error is
// set when the session could not run at all (components that do not
// configure, a catalog that fails); a VM that fails is recorded in the
// session, which then ends "warning" or "failed".
func (e *Engine) Run(ctx context.Context, job *config.Job) (*catalog.Session, error) {
	sess, err := e.Catalog.BeginSession(job.Name)
	if err != nil {
		return nil, fmt.Errorf("job %q: begin session: %w", job.Name, err)
	}
	e.emit(Event{Kind: SessionStarted, Session: sess.ID, Job: job.Name})
	r := &run{e: e, job: job, sess: sess}
	runErr := r.run(ctx)

	sess.Ended = e.now().UTC()
	sess.Notes = e.takeNotes(sess.ID)
	sess.Result = sessionResult(sess, runErr)
	if runErr != nil {
		sess.Error = runErr.Error()
	}
	if err := e.Catalog.SaveSession(sess); err != nil {
		return sess, errors.Join(runErr, fmt.Errorf("job %q: save session: %w", job.Name, err))
	}
	if err := e.saveJobState(job, sess, r.selected); err != nil {
		return sess, errors.Join(runErr, err)
	}
	e.emit(Event{Kind: SessionFinished, Session: sess.ID, Job: job.Name, Result: sess.Result, Err: runErr})
	return sess, runErr
}

func sessionResult(s *catalog.Session, runErr error) catalog.Result {
	var good, failed int
	for _, vm := range s.VMs {
		if vm.Result == catalog.ResultFailed {
			failed++
		} else {
			good++
		}
	}
	switch {
	case runErr != nil || good == 0:
		return catalog.ResultFailed
	case failed > 0:
		return catalog.ResultWarning
	}
	for _, vm := range s.VMs {
		if vm.Result != catalog.ResultSuccess && vm.Result != catalog.ResultSkipped {
			return catalog.ResultWarning
		}
	}
	if len(s.Warnings) > 0 {
		return catalog.ResultWarning
	}
	return catalog.ResultSuccess
}

// saveJobState records the job's settings and last session; selected (the
// selectors that picked each VM) when the session got as far as selecting.
func (e *Engine) saveJobState(job *config.Job, sess *catalog.Session, selected map[string][]string) error {
	st, err := e.Catalog.JobState(job.Name)
	if err != nil {
		st = &catalog.JobState{Job: job.Name}
	}
	if !job.Selects() {
		st.Selected = nil
	} else if selected != nil {
		st.Selected = selected
	}
	st.Fingerprint = Fingerprint(job)
	st.LastSession = sess.ID
	if sess.Result == catalog.ResultSuccess {
		st.LastSuccess = sess.ID
	}
	st.Updated = e.now().UTC()
	if err := e.Catalog.PutJobState(st); err != nil {
		return fmt.Errorf("job %q: save job state: %w", job.Name, err)
	}
	return nil
}

// Fingerprint digests the settings of a job that shape its replicas, so a
// plan can tell that they changed since the last run.
func Fingerprint(job *config.Job) string {
	var repo string
	if job.Repository != nil {
		repo = job.Repository.Address()
	}
	type reip struct{ From, To, Gateway string }
	v := struct {
		Source, Target, Repository string
		VMs                        []string
		// Left out when empty, so that the fingerprint of a job without
		// selectors stays what it was before selectors existed.
		Selectors   []string `json:",omitempty"`
		Exclude     []string `json:",omitempty"`
		Retention   int
		Suffix      string
		NetworkMap  []config.NetworkMapping
		ReIP        []reip
		Compression config.Compression
		BlockSize   int64
	}{Source: job.Source.Address(), Target: job.Target.Address(), Repository: repo, VMs: job.VMs,
		Retention: job.Retention.RestorePoints, Suffix: job.ReplicaSuffix, Compression: job.Transfer.Compression, BlockSize: job.Transfer.BlockSize}
	for _, s := range job.Selectors {
		v.Selectors = append(v.Selectors, s.String())
	}
	for _, s := range job.Exclude {
		v.Exclude = append(v.Exclude, s.String())
	}
	for _, m := range job.NetworkMap {
		v.NetworkMap = append(v.NetworkMap, config.NetworkMapping{From: m.From, To: m.To})
	}
	for _, r := range job.ReIP {
		v.ReIP = append(v.ReIP, reip{r.FromSubnet.String(), r.ToSubnet.String(), r.Gateway.String()})
	}
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
