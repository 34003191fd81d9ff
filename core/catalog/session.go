package catalog

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Result is the outcome of a session or of one VM in it.
type Result string

const (
	ResultRunning Result = "running"
	ResultSuccess Result = "success"
	ResultWarning Result = "warning" // done, with something the operator should read
	ResultFailed  Result = "failed"
	// ResultSkipped is a VM not replicated on purpose: its replica is
	// failed over (a DR test or a real failover), so runs leave it alone.
	ResultSkipped Result = "skipped"
)

func (r Result) valid() bool {
	switch r {
	case ResultRunning, ResultSuccess, ResultWarning, ResultFailed, ResultSkipped:
		return true
	}
	return false
}

// Interrupted is the Error of sessions (and of their VMs) that MarkAbandoned
// found still running after their process died.
const Interrupted = "interrupted"

// Mode is how a disk's changes were found.
type Mode string

const (
	ModeFull           Mode = "full"            // first run: every allocated block
	ModeChangeTracking Mode = "change-tracking" // the hypervisor's changed areas
	ModeDigest         Mode = "digest"          // read all, send blocks whose digest differs
)

// Lane is the data path a disk's blocks took.
type Lane string

const (
	LaneDirect Lane = "direct" // the data mover opened the disk itself
	LaneStream Lane = "stream" // through the plugin's gRPC stream
)

// Session is one run of a job.
type Session struct {
	// ID sorts by start time: "20261122T010203Z-3fa2" (UTC start, second
	// precision, 4 random hex digits) when the catalog makes it.
	ID      string    `json:"id"`
	Job     string    `json:"job"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended,omitzero"`
	Result  Result    `json:"result"`
	Error   string    `json:"error,omitempty"`
	// VMs hold one entry per VM, named uniquely by VMResult.VM.
	VMs []VMResult `json:"vms,omitempty"`
	// Warnings are what the operator should read about the session as a
	// whole, such as a selector that matched no VM. A session that would
	// otherwise succeed ends "warning" when it has any.
	Warnings []string `json:"warnings,omitempty"`
	// Notes are what the session told its operator as it went (the
	// engine's notices: fallbacks, proxies chosen, retries), in order, at
	// most MaxNotes; a last note says how many more there were.
	Notes []Note `json:"notes,omitempty"`
	// Selection is what the job's folder and tag selectors and its
	// exclusions picked; nil for a job that names its VMs one by one.
	Selection *Selection `json:"selection,omitempty"`
	// Owner is the process that runs the session, set by BeginSession.
	Owner *Owner `json:"owner,omitempty"`
	// Progress is how far a running session got, as its process last
	// recorded it (SaveProgress); nil once the session ended.
	Progress *Progress `json:"progress,omitempty"`
}

// Note is one thing a session told its operator.
type Note struct {
	Time    time.Time `json:"time"`
	VM      string    `json:"vm,omitempty"` // "" for the session as a whole
	Message string    `json:"message"`
}

// MaxNotes bounds the notes a session keeps.
const MaxNotes = 500

// Owner is the process that runs a session. It is for people to read: the
// lock of the job, not the pid, tells whether that process still runs.
type Owner struct {
	PID  int    `json:"pid"`
	Host string `json:"host,omitempty"`
}

// Progress is how far a running session got: the bytes of the disks begun
// so far that were handled, of how many, and the disks and VMs finished.
type Progress struct {
	Done      int64     `json:"done"`
	Total     int64     `json:"total"`
	Disks     int       `json:"disks"`      // disks begun
	DisksDone int       `json:"disks_done"` // disks finished
	VMsDone   int       `json:"vms_done"`   // VMs finished
	Updated   time.Time `json:"updated"`    // when it was recorded
}

// Selection is what a session's selectors picked.
type Selection struct {
	Selectors []SelectorMatch `json:"selectors"`
	// New are VMs a selector picked for the first time: the session
	// creates their replicas.
	New []string `json:"new,omitempty"`
	// Left are VMs with a replica that the job no longer picks: their
	// replicas and restore points are kept, not replicated.
	Left []string `json:"left,omitempty"`
	// Excluded are VMs the job would replicate but excludes.
	Excluded []string `json:"excluded,omitempty"`
}

// SelectorMatch is what one selector of vms, or one entry of exclude,
// matched.
type SelectorMatch struct {
	Selector string   `json:"selector"` // as written: folder:/Prod/vm/web, tag:tier/gold
	Exclude  bool     `json:"exclude,omitempty"`
	VMs      []string `json:"vms"`
}

// VMResult is what a session did to one VM.
type VMResult struct {
	VM           string        `json:"vm"`                      // source VM name
	Replica      string        `json:"replica,omitempty"`       // replica id on the target
	RestorePoint string        `json:"restore_point,omitempty"` // the point this session created, if any
	Result       Result        `json:"result"`
	Error        string        `json:"error,omitempty"`
	Duration     time.Duration `json:"duration_ns,omitempty"`
	// Attempts is how many times the session tried the VM (its job's
	// retry block may ask for more than one); the rest of the result is
	// the last attempt's. 0 for a VM refused before any attempt, and in
	// sessions of ferry versions that did not record it.
	Attempts int          `json:"attempts,omitempty"`
	Disks    []DiskResult `json:"disks,omitempty"`
}

// DiskResult is what a session did to one disk of a VM.
type DiskResult struct {
	Index int  `json:"index"`
	Mode  Mode `json:"mode,omitempty"`
	// Why says why the disk moved in its mode when that is not the plain
	// one (why digests rather than change tracking), in the words of the
	// plan; Planned is the mode decided at the VM's start when the run
	// learned better while moving the disk (a change id the source no
	// longer knew) and fell back to Mode. Both empty otherwise.
	Why     string `json:"why,omitempty"`
	Planned Mode   `json:"planned_mode,omitempty"`
	Lane    Lane   `json:"lane,omitempty"`
	// Transport and TransportWhy are how the source plugin read the disk
	// (its own transport mode) and why, when it says.
	Transport    string `json:"transport,omitempty"`
	TransportWhy string `json:"transport_why,omitempty"`
	// SourceProxy and TargetProxy are the proxies that read and wrote the
	// disk; empty when the disk moved inside the control plane.
	SourceProxy   string        `json:"source_proxy,omitempty"`
	TargetProxy   string        `json:"target_proxy,omitempty"`
	BytesRead     int64         `json:"bytes_read"`
	BytesSent     int64         `json:"bytes_sent"`
	BytesWritten  int64         `json:"bytes_written"`
	BlocksChanged int64         `json:"blocks_changed"`
	BlocksTotal   int64         `json:"blocks_total"`
	Size          int64         `json:"size"` // capacity of the disk in bytes
	Duration      time.Duration `json:"duration_ns,omitempty"`
	// Busy says how busy each stage of the data path was; nil when the
	// disk was not moved.
	Busy  *Busy  `json:"busy,omitempty"`
	Error string `json:"error,omitempty"`
}

// Busy is how busy each stage of a disk's data path was, in percent of
// the disk's time, and the busiest: the bottleneck ("source", "proxy",
// "network" or "target").
type Busy struct {
	Source     int    `json:"source"`
	Proxy      int    `json:"proxy"`
	Network    int    `json:"network"`
	Target     int    `json:"target"`
	Bottleneck string `json:"bottleneck,omitempty"`
}

// String is the statistics as Veeam prints them: "source 85% > proxy
// 40% > network 0% > target 12%; bottleneck source".
func (b *Busy) String() string {
	s := fmt.Sprintf("source %d%% > proxy %d%% > network %d%% > target %d%%", b.Source, b.Proxy, b.Network, b.Target)
	if b.Bottleneck != "" {
		s += "; bottleneck " + b.Bottleneck
	}
	return s
}

// Totals sum a session's VM and disk results.
type Totals struct {
	VMs           int   `json:"vms"`
	Running       int   `json:"running"` // VMs by result
	Success       int   `json:"success"`
	Warning       int   `json:"warning"`
	Failed        int   `json:"failed"`
	Skipped       int   `json:"skipped"`
	Disks         int   `json:"disks"`
	Size          int64 `json:"size"` // bytes of disk capacity processed
	BytesRead     int64 `json:"bytes_read"`
	BytesSent     int64 `json:"bytes_sent"`
	BytesWritten  int64 `json:"bytes_written"`
	BlocksChanged int64 `json:"blocks_changed"`
	BlocksTotal   int64 `json:"blocks_total"`
	// DigestDisks counts the disks compared by digests: read whole,
	// because change tracking could not answer.
	DigestDisks int `json:"digest_disks"`
}

// Totals sums the session's VM and disk results.
func (s *Session) Totals() Totals {
	var t Totals
	for _, vm := range s.VMs {
		t.VMs++
		switch vm.Result {
		case ResultRunning:
			t.Running++
		case ResultSuccess:
			t.Success++
		case ResultWarning:
			t.Warning++
		case ResultFailed:
			t.Failed++
		case ResultSkipped:
			t.Skipped++
		}
		for _, d := range vm.Disks {
			t.Disks++
			if d.Mode == ModeDigest {
				t.DigestDisks++
			}
			t.Size += d.Size
			t.BytesRead += d.BytesRead
			t.BytesSent += d.BytesSent
			t.BytesWritten += d.BytesWritten
			t.BlocksChanged += d.BlocksChanged
			t.BlocksTotal += d.BlocksTotal
		}
	}
	return t
}

func (s *Session) check() error {
	if err := checkName("session id", s.ID); err != nil {
		return err
	}
	if err := checkName("job", s.Job); err != nil {
		return err
	}
	if !s.Result.valid() {
		return fmt.Errorf("unknown result %q: %w", s.Result, errdefs.ErrInvalidArgument)
	}
	seen := make(map[string]bool, len(s.VMs))
	for _, vm := range s.VMs {
		if err := checkVMResult(vm); err != nil {
			return err
		}
		if seen[vm.VM] {
			return fmt.Errorf("vm %q listed twice: %w", vm.VM, errdefs.ErrInvalidArgument)
		}
		seen[vm.VM] = true
	}
	return nil
}

func checkVMResult(vm VMResult) error {
	if err := checkName("vm", vm.VM); err != nil {
		return err
	}
	if !vm.Result.valid() {
		return fmt.Errorf("vm %q: unknown result %q: %w", vm.VM, vm.Result, errdefs.ErrInvalidArgument)
	}
	if vm.Attempts < 0 {
		return fmt.Errorf("vm %q: %d attempts: %w", vm.VM, vm.Attempts, errdefs.ErrInvalidArgument)
	}
	for _, d := range vm.Disks {
		switch d.Mode {
		case "", ModeFull, ModeChangeTracking, ModeDigest:
		default:
			return fmt.Errorf("vm %q disk %d: unknown mode %q: %w", vm.VM, d.Index, d.Mode, errdefs.ErrInvalidArgument)
		}
		switch d.Lane {
		case "", LaneDirect, LaneStream:
		default:
			return fmt.Errorf("vm %q disk %d: unknown lane %q: %w", vm.VM, d.Index, d.Lane, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// newSessionID makes "20261122T010203Z-3fa2" from the start time and two
// random bytes.
func newSessionID(started time.Time, r io.Reader) (string, error) {
	var b [2]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return started.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:]), nil
}

// sessionIDTries bounds the search for a free id: 16 collisions in a row
// within one second means the random source is broken.
const sessionIDTries = 16

// BeginSession records a new "running" session of job, started now, with
// a new id, and returns it. See Catalog.BeginSession.
func (t *Tx) BeginSession(job string) (*Session, error) {
	if err := checkName("job", job); err != nil {
		return nil, fmt.Errorf("begin session: %w", err)
	}
	if err := t.c.controlled(job); err != nil {
		return nil, err
	}
	lock, err := tryLockJob(t.c.path, job)
	if err != nil {
		return nil, fmt.Errorf("begin session of job %q: %w", job, err)
	}
	if lock == nil {
		return nil, t.refuse(job)
	}
	s, err := t.beginSession(job)
	if err != nil {
		lock.release()
		return nil, err
	}
	// Taken over by the Catalog when the transaction commits, released
	// when it does not.
	t.running(s.ID, lock)
	return s, nil
}

// refuse is the error of a second session of job: it names the session
// that runs, or the command that holds the job (HoldJobs), whichever took
// the job last (a holder's file a dead process left is older than the
// session that holds the lock now).
func (t *Tx) refuse(job string) error {
	other := t.runningSession(job)
	if h := readHolder(t.c.path, job); h != nil && (other == nil || h.Since.After(other.Started)) {
		return fmt.Errorf("begin session of job %q: %s holds the job; try again when it ends: %w", job, h, errdefs.ErrFailedPrecondition)
	}
	if other == nil {
		return fmt.Errorf("begin session of job %q: another ferry is starting a session of this job; one session of a job runs at a time: %w",
			job, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("begin session of job %q: session %s of this job is running since %s%s; one session of a job runs at a time: wait for it to end: %w",
		job, other.ID, other.Started.UTC().Format(time.RFC3339), other.Owner.by(), errdefs.ErrFailedPrecondition)
}

func (t *Tx) beginSession(job string) (*Session, error) {
	now := t.c.now()
	sessions := t.bucket(bucketSessions)
	for range sessionIDTries {
		id, err := newSessionID(now, t.c.rand)
		if err != nil {
			return nil, fmt.Errorf("begin session of job %q: %w", job, err)
		}
		if sessions.Get([]byte(id)) != nil {
			continue
		}
		s := &Session{ID: id, Job: job, Started: now, Result: ResultRunning, Owner: self()}
		if err := t.SaveSession(s); err != nil {
			return nil, fmt.Errorf("begin session of job %q: %w", job, err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("begin session of job %q: no free session id after %d tries: %w",
		job, sessionIDTries, errdefs.ErrAlreadyExists)
}

// SaveSession inserts or replaces s. See Catalog.SaveSession.
func (t *Tx) SaveSession(s *Session) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("save session %q: %w", s.ID, err)
	}
	sessions := t.bucket(bucketSessions)
	id := []byte(s.ID)
	var old Session
	found, err := getJSON(sessions, id, &old)
	if err != nil {
		return fmt.Errorf("save session %q: %w", s.ID, err)
	}
	if found && old.Job != s.Job {
		return fmt.Errorf("save session %q: it belongs to job %q, not %q: %w", s.ID, old.Job, s.Job, errdefs.ErrInvalidArgument)
	}
	now := t.c.now()
	if s.Started.IsZero() {
		s.Started = now
	}
	if s.Result != ResultRunning && s.Ended.IsZero() {
		s.Ended = now
	}
	// The owner and the progress the process recorded stay while the
	// session runs, also when the copy saved does not carry them; the
	// progress goes when it ends.
	rec := *s
	if found && rec.Owner == nil {
		rec.Owner = old.Owner
	}
	if found && rec.Progress == nil && old.Result == ResultRunning {
		rec.Progress = old.Progress
	}
	if rec.Result != ResultRunning {
		rec.Progress = nil
	}
	if err := checkTime("start time", s.Started); err != nil {
		return fmt.Errorf("save session %q: %w", s.ID, err)
	}
	if !found {
		if err := t.indexSession(s); err != nil {
			return fmt.Errorf("save session %q: %w", s.ID, err)
		}
	}
	if err := putJSON(sessions, id, &rec); err != nil {
		return fmt.Errorf("save session %q: %w", s.ID, err)
	}
	running := t.bucket(bucketRunning)
	if s.Result == ResultRunning {
		if err := running.Put(id, nil); err != nil {
			return fmt.Errorf("save session %q: %w", s.ID, err)
		}
		// Live from the commit on; the Catalog hands over transactions
		// one at a time, so MarkAbandoned never sees it running and not
		// live.
		t.running(s.ID, nil)
	} else {
		if err := running.Delete(id); err != nil {
			return fmt.Errorf("save session %q: %w", s.ID, err)
		}
		t.ended = append(t.ended, s.ID)
	}
	return nil
}

// SaveProgress records p as the progress of session id. See
// Catalog.SaveProgress.
func (t *Tx) SaveProgress(id string, p Progress) error {
	s, err := t.Session(id)
	if err != nil {
		return fmt.Errorf("save progress: %w", err)
	}
	if s.Result != ResultRunning {
		return nil
	}
	p.Updated = t.c.now()
	s.Progress = &p
	if err := putJSON(t.bucket(bucketSessions), []byte(id), s); err != nil {
		return fmt.Errorf("save progress of session %q: %w", id, err)
	}
	return nil
}

// indexSession gives a new session its place in the listing order: the
// order sessions were first saved in, whatever the clock said.
func (t *Tx) indexSession(s *Session) error {
	order := t.bucket(bucketSessionSeq)
	seq, err := order.NextSequence()
	if err != nil {
		return err
	}
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	if err := order.Put(k[:], []byte(s.ID)); err != nil {
		return err
	}
	return t.bucket(bucketJobSessions).Put(append(prefix(s.Job), k[:]...), []byte(s.ID))
}

// SaveSessionVM records one VM's result in session id, replacing the entry
// of the same VM or adding one. See Catalog.SaveSessionVM.
func (t *Tx) SaveSessionVM(id string, vm VMResult) error {
	s, err := t.Session(id)
	if err != nil {
		return fmt.Errorf("save vm %q result: %w", vm.VM, err)
	}
	replaced := false
	for i := range s.VMs {
		if s.VMs[i].VM == vm.VM {
			s.VMs[i] = vm
			replaced = true
		}
	}
	if !replaced {
		s.VMs = append(s.VMs, vm)
	}
	return t.SaveSession(s)
}

// Session returns the session with id. See Catalog.Session.
func (t *Tx) Session(id string) (*Session, error) {
	var s Session
	found, err := getJSON(t.bucket(bucketSessions), []byte(id), &s)
	if err != nil {
		return nil, fmt.Errorf("get session %q: %w", id, err)
	}
	if !found {
		return nil, fmt.Errorf("get session %q: %w", id, errdefs.ErrNotFound)
	}
	return &s, nil
}

// indexed returns the session an index names: one that is not there is a
// damaged catalog, not a session that does not exist.
func (t *Tx) indexed(index string, id []byte) (*Session, error) {
	s, err := t.Session(string(id))
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, corrupt("the %s index names session %q, which is not in the catalog", index, id)
	}
	return s, err
}

// Sessions lists sessions newest first. See Catalog.Sessions.
func (t *Tx) Sessions(job string, limit int) ([]Session, error) {
	var (
		b     = t.bucket(bucketSessionSeq)
		index = "session order"
		p     []byte
		end   []byte
	)
	if job != "" {
		if err := checkName("job", job); err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		b, index = t.bucket(bucketJobSessions), "job sessions"
		p = prefix(job)
		// The first key after every key starting with p: p's last byte
		// (the NUL separator) plus one.
		end = append(bytes.Clone(p[:len(p)-1]), sep[0]+1)
	}
	cur := b.Cursor()
	var k, v []byte
	if end == nil {
		k, v = cur.Last()
	} else if k, _ = cur.Seek(end); k == nil {
		k, v = cur.Last()
	} else {
		k, v = cur.Prev()
	}
	var out []Session
	for ; k != nil && bytes.HasPrefix(k, p); k, v = cur.Prev() {
		if limit > 0 && len(out) == limit {
			break
		}
		s, err := t.indexed(index, v)
		if err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		out = append(out, *s)
	}
	return out, nil
}

// orphans lists the running sessions that this Catalog value did not
// write, with their jobs.
func (t *Tx) orphans() (map[string]string, error) {
	var ids []string
	_ = t.bucket(bucketRunning).ForEach(func(k, _ []byte) error {
		ids = append(ids, string(k))
		return nil
	})
	out := make(map[string]string)
	for _, id := range ids {
		if t.c.isLive(id) {
			continue
		}
		s, err := t.indexed("running sessions", []byte(id))
		if err != nil {
			return nil, fmt.Errorf("list running sessions: %w", err)
		}
		out[id] = s.Job
	}
	return out, nil
}

// abandon fails the sessions of dead that are still running and that no
// Catalog value of this process owns. See Catalog.MarkAbandoned.
func (t *Tx) abandon(dead []string) (int, error) {
	running := t.bucket(bucketRunning)
	n := 0
	for _, id := range dead {
		if running.Get([]byte(id)) == nil || t.c.isLive(id) {
			continue
		}
		s, err := t.Session(id)
		if err != nil {
			return 0, fmt.Errorf("mark abandoned sessions: %w", err)
		}
		s.Result = ResultFailed
		s.Error = Interrupted
		s.Ended = t.c.now()
		for i := range s.VMs {
			if s.VMs[i].Result == ResultRunning {
				s.VMs[i].Result = ResultFailed
				if s.VMs[i].Error == "" {
					s.VMs[i].Error = Interrupted
				}
			}
		}
		if err := t.SaveSession(s); err != nil {
			return 0, fmt.Errorf("mark abandoned sessions: %w", err)
		}
		n++
	}
	return n, nil
}

// BeginSession records a new session of job with Result "running", Started
// now, a new id and this process as its Owner, and returns it. One session
// of a job runs at a time: the session holds its job's lock until it is
// saved with a result or the Catalog is closed, and while another session
// of the job (of this process or another) holds it, BeginSession fails
// with an error naming that session that matches ErrFailedPrecondition.
// Other jobs' sessions run at the same time. While a ferry server holds the
// catalog's jobs (ClaimControl) and c is not its Catalog, BeginSession
// fails with an error naming the server that matches ErrControlled and
// ErrFailedPrecondition. Safe for concurrent use.
// Errors: ErrInvalidArgument for an empty job.
func (c *Catalog) BeginSession(job string) (*Session, error) {
	var s *Session
	err := c.Update(func(tx *Tx) error {
		var err error
		s, err = tx.BeginSession(job)
		return err
	})
	return s, err
}

// SaveSession inserts s, or replaces the session with its ID: call it for
// progress and at the end. It fills in a zero Started (now) and, when the
// result is not "running", a zero Ended (now), in s itself. Saving the same
// session twice stores it once. A session keeps its place in Sessions'
// order from its first save, and its job: saving it under another job is
// ErrInvalidArgument, as are an empty ID or job, an unknown result, mode or
// lane, and a VM listed twice. Safe for concurrent use, but two goroutines
// saving copies of one session overwrite each other: to record VMs
// independently use SaveSessionVM.
func (c *Catalog) SaveSession(s *Session) error {
	return c.Update(func(tx *Tx) error { return tx.SaveSession(s) })
}

// SaveSessionVM records one VM's result in session id, replacing the
// entry for the same VM or adding one, and leaves the other VMs as they
// are. Safe for concurrent use, also for different VMs of one session.
// Idempotent. Errors: ErrNotFound when the session does not exist,
// ErrInvalidArgument for a malformed result.
func (c *Catalog) SaveSessionVM(id string, vm VMResult) error {
	return c.Update(func(tx *Tx) error { return tx.SaveSessionVM(id, vm) })
}

// SaveProgress records p as the progress of the running session id, with
// Updated now, and leaves the rest of the session as it is. It does
// nothing to a session that ended (progress that arrives late). Call it
// now and then, not for every block: it is a write of the catalog file.
// Safe for concurrent use. Errors: ErrNotFound when the session does not
// exist.
func (c *Catalog) SaveProgress(id string, p Progress) error {
	return c.Update(func(tx *Tx) error { return tx.SaveProgress(id, p) })
}

// Session returns the session with id, or an error matching ErrNotFound.
// Safe for concurrent use.
func (c *Catalog) Session(id string) (*Session, error) {
	var s *Session
	err := c.View(func(tx *Tx) error {
		var err error
		s, err = tx.Session(id)
		return err
	})
	return s, err
}

// Sessions lists the sessions of job, or of every job when job is "",
// newest first: in the reverse of the order they were first saved in,
// which does not depend on the clock. limit > 0 returns at most that many;
// limit <= 0 returns all. An unknown job has no sessions, which is not an
// error. Safe for concurrent use.
func (c *Catalog) Sessions(job string, limit int) ([]Session, error) {
	var out []Session
	err := c.View(func(tx *Tx) error {
		var err error
		out, err = tx.Sessions(job, limit)
		return err
	})
	return out, err
}

// MarkAbandoned turns the sessions left "running" by a process that died
// into "failed" with Error "interrupted" (Interrupted), ended now, and
// fails their VMs that were still running the same way. A session is
// abandoned when no process holds its job's lock (see BeginSession):
// sessions of other processes that run, and those begun or saved as
// running through this Catalog value, are left alone. ferry calls it when
// it opens a configuration. It returns how many sessions it changed, and
// is idempotent: a second call finds none. It writes the catalog only when
// it has a session to change. Safe for concurrent use.
func (c *Catalog) MarkAbandoned() (int, error) {
	var orphans map[string]string
	if err := c.View(func(tx *Tx) error {
		var err error
		orphans, err = tx.orphans()
		return err
	}); err != nil {
		return 0, err
	}
	var dead []string
	for id, job := range orphans {
		if c.holdsJob(job) {
			// This value runs a session of the job: that one is not it.
			dead = append(dead, id)
			continue
		}
		running, err := jobRunning(c.path, job)
		if err != nil {
			return 0, fmt.Errorf("mark abandoned sessions: %w", err)
		}
		if !running {
			dead = append(dead, id)
		}
	}
	if len(dead) == 0 {
		return 0, nil
	}
	slices.Sort(dead)
	var n int
	err := c.Update(func(tx *Tx) error {
		var err error
		n, err = tx.abandon(dead)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// self is the Owner of the sessions this process begins.
func self() *Owner {
	host, _ := os.Hostname()
	return &Owner{PID: os.Getpid(), Host: host}
}
