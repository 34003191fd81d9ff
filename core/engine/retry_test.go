package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"no error", nil, false},
		{"unclassified", errors.New("read /dev/sdb: input/output error"), true},
		{"unavailable", fmt.Errorf("vsphere vc1 cannot be reached: %w", errdefs.ErrUnavailable), true},
		{"unavailable over the wire", errdefs.WithClass("dial tcp 10.0.0.1:443: connection refused", errdefs.ErrUnavailable), true},
		{"plugin exited", fmt.Errorf("describe: %w", errdefs.ErrPluginExited), true},
		{"deadline exceeded", fmt.Errorf("open disk: %w", context.DeadlineExceeded), true},
		{"change id reset", fmt.Errorf("changed areas: %w", errdefs.ErrChangeIDReset), true},
		{"two retryable disks", errors.Join(fmt.Errorf("disk 0: %w", errdefs.ErrUnavailable), errors.New("disk 1: EOF")), true},
		{"not found", fmt.Errorf("vm %q: %w", "ghost", errdefs.ErrNotFound), false},
		{"not found over the wire", errdefs.WithClass("vm ghost: not found", errdefs.ErrNotFound), false},
		{"invalid argument", fmt.Errorf("names the same VM: %w", errdefs.ErrInvalidArgument), false},
		{"failed precondition", fmt.Errorf("replica is committed: %w", errdefs.ErrFailedPrecondition), false},
		{"already exists", fmt.Errorf("create replica: %w", errdefs.ErrAlreadyExists), false},
		{"permission denied", fmt.Errorf("login: %w", errdefs.ErrPermissionDenied), false},
		{"unimplemented", fmt.Errorf("quiesce: %w", errdefs.ErrUnimplemented), false},
		{"data loss", fmt.Errorf("header: %w", errdefs.ErrDataLoss), false},
		{"cancelled", fmt.Errorf("move: %w", context.Canceled), false},
		{"a permanent cause among retryable ones", errors.Join(fmt.Errorf("disk 0: %w", errdefs.ErrUnavailable), fmt.Errorf("disk 1: %w", errdefs.ErrPermissionDenied)), false},
		{"a permanent cause wrapped in an unavailable one", fmt.Errorf("%w: %w", errdefs.ErrUnavailable, errdefs.ErrInvalidArgument), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Retryable(tc.err); got != tc.want {
				t.Fatalf("Retryable(%v) = %t, want %t", tc.err, got, tc.want)
			}
		})
	}
}

// flakySource fails reads of a VM's disk 0 past its middle with err, for
// the first fails snapshot disks it opens (all when fails < 0): a
// connection lost in the middle of a copy.
type flakySource struct {
	*sdktest.MemSource
	vm    string
	fails int
	err   func(n int) error // the error of the nth failed disk, from 1
	mu    sync.Mutex
	n     int // failed disks so far
}

func (s *flakySource) OpenSnapshotDisk(ctx context.Context, vm, snap string, disk int) (sdk.DiskReader, error) {
	r, err := s.MemSource.OpenSnapshotDisk(ctx, vm, snap, disk)
	if err != nil || vm != s.vm || disk != 0 {
		return r, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fails >= 0 && s.n >= s.fails {
		return r, nil
	}
	s.n++
	return halfReader{r, s.err(s.n)}, nil
}

func (s *flakySource) failed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// halfReader reads the first half of a disk and fails beyond it.
type halfReader struct {
	sdk.DiskReader
	err error
}

func (h halfReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > h.Size()/2 {
		return 0, h.err
	}
	return h.DiskReader.ReadAt(p, off)
}

func unavailable(n int) error {
	return fmt.Errorf("read %d refused: %w", n, errdefs.ErrUnavailable)
}

// vmEvents records, per VM, the kinds of the VM events of the fixture's
// runs and the attempt of each VMFinished, and the notices.
type vmEvents struct {
	mu       sync.Mutex
	started  map[string]int
	finished map[string][]int // attempts
	errs     map[string]error // of the last VMFinished
	notices  []string
}

func (f *fixture) recordEvents() *vmEvents {
	v := &vmEvents{started: map[string]int{}, finished: map[string][]int{}, errs: map[string]error{}}
	f.eng.Events = func(e Event) {
		v.mu.Lock()
		defer v.mu.Unlock()
		switch e.Kind {
		case VMStarted:
			v.started[e.VM]++
		case VMFinished:
			v.finished[e.VM] = append(v.finished[e.VM], e.Attempt)
			v.errs[e.VM] = e.Err
		case Notice:
			v.notices = append(v.notices, e.VM+": "+e.Message)
		}
	}
	return v
}

func (v *vmEvents) noticesText() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return strings.Join(v.notices, "\n")
}

func vmResult(t *testing.T, s *catalog.Session, vm string) catalog.VMResult {
	t.Helper()
	for _, r := range s.VMs {
		if r.VM == vm {
			return r
		}
	}
	t.Fatalf("session %s has no result of %s: %+v", s.ID, vm, s.VMs)
	return catalog.VMResult{}
}

// A VM whose copy breaks with an unavailable source twice is tried again
// in the same session after the job's wait, and its third attempt makes
// an exact restore point; the earlier one stays intact. The other VM is
// tried once.
func TestFailedVMIsRetriedInTheSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "web-01", "db-01")
		f.job.Retry = config.Retry{Attempts: 3, Wait: 10 * time.Minute}
		f.write("web-01", 0, 30)
		f.runOK("web-01")
		first := f.sourceImage("web-01")
		firstPoint := f.points("web-01")[0].ID

		f.write("web-01", 0, 10)
		want := f.sourceImage("web-01")
		flaky := &flakySource{MemSource: f.comps.src, vm: "web-01", fails: 2, err: unavailable}
		f.comps.source = flaky
		ev := f.recordEvents()
		start := time.Now()
		s := f.run()
		took := time.Since(start)

		web, db := vmResult(t, s, "web-01"), vmResult(t, s, "db-01")
		if s.Result != catalog.ResultSuccess || web.Result != catalog.ResultSuccess || web.Attempts != 3 || web.Error != "" ||
			db.Result != catalog.ResultSuccess || db.Attempts != 1 {
			t.Fatalf("session %s: %+v", s.Result, s.VMs)
		}
		if flaky.failed() != 2 {
			t.Fatalf("%d failed copies, want 2", flaky.failed())
		}
		if took != 20*time.Minute {
			t.Fatalf("the session took %s, want two waits of 10m", took)
		}
		if sessions, _ := f.cat.Sessions("web", 0); len(sessions) != 2 {
			t.Fatalf("%d sessions, want the first run's and one with the retries", len(sessions))
		}
		// One start and one finish per VM, whatever the attempts.
		if ev.started["web-01"] != 1 || fmt.Sprint(ev.finished["web-01"]) != "[3]" || ev.started["db-01"] != 1 || fmt.Sprint(ev.finished["db-01"]) != "[1]" {
			t.Fatalf("VM events: started %v, finished %v", ev.started, ev.finished)
		}
		notices := ev.noticesText()
		for _, n := range []string{
			"web-01: attempt 1 of 3 failed; tried again after the other VMs and a wait of 10m0s: job \"web\" vm \"web-01\" disk 0: move: ",
			"read 1 refused: unavailable",
			": trying web-01 again in 10m0s (at ", // the hour in the local time zone
			"): attempt 2 of 3\n",
			"web-01: attempt 2 of 3\n",
			"web-01: attempt 2 of 3 failed",
			"web-01: attempt 3 of 3\n",
		} {
			if !strings.Contains(notices, n) {
				t.Errorf("notices lack %q:\n%s", n, notices)
			}
		}

		ps := f.points("web-01")
		if len(ps) != 2 || ps[0].ID != firstPoint || ps[1].ID != web.RestorePoint {
			t.Fatalf("points %+v, want the first and the retry's %s", ps, web.RestorePoint)
		}
		same(t, "the earlier point", f.pointImage("web-01", firstPoint, 2), first)
		same(t, "the retry's point", f.pointImage("web-01", web.RestorePoint, 2), want)
		if snaps, _ := f.comps.src.ListSnapshots(context.Background(), "web-01"); len(snaps) != 0 {
			t.Fatalf("snapshots left: %+v", snaps)
		}
	})
}

// turnsComponents configures the source from a list, one entry per call
// (the last for every call after): a source, or an error. It is how a
// plugin process that dies and is started again looks to the engine.
type turnsComponents struct {
	*memComponents
	mu      sync.Mutex
	calls   int
	sources []sdk.Source
	errs    []error
}

func (c *turnsComponents) Source(context.Context, *config.PluginBlock) (sdk.Source, sdk.Capabilities, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := min(c.calls, len(c.sources)-1)
	c.calls++
	return c.sources[i], c.memComponents.src.Capabilities(), c.errs[i]
}

// A retry pass configures the components again, as the next session
// would: a source whose plugin died is replaced by a new one, and a pass
// whose source cannot be configured fails its VMs without trying them.
func TestRetryConfiguresTheComponentsAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "web-01")
		f.job.Retry = config.Retry{Attempts: 3, Wait: time.Minute}
		f.write("web-01", 0, 10)
		dead := &flakySource{MemSource: f.comps.src, vm: "web-01", fails: -1, err: func(int) error {
			return errdefs.WithClass("plugin mem exited while serving the call", errdefs.ErrPluginExited)
		}}
		comps := &turnsComponents{memComponents: f.comps,
			sources: []sdk.Source{dead, nil, f.comps.src},
			errs:    []error{nil, fmt.Errorf("start plugin mem: %w", errdefs.ErrUnavailable), nil}}
		f.eng.Components = comps
		ev := f.recordEvents()
		want := f.sourceImage("web-01")
		s := f.run()
		web := vmResult(t, s, "web-01")
		if s.Result != catalog.ResultSuccess || web.Result != catalog.ResultSuccess || web.Attempts != 3 || comps.calls != 3 || dead.failed() != 1 {
			t.Fatalf("session %s after %d configurations and %d failed copies: %+v", s.Result, comps.calls, dead.failed(), s.VMs)
		}
		notices := ev.noticesText()
		for _, n := range []string{
			"web-01: attempt 1 of 3 failed; tried again after the other VMs and a wait of 1m0s: job \"web\" vm \"web-01\" disk 0: move: read at ",
			"plugin mem exited while serving the call",
			": the VMs to try again cannot be tried: source source.mem.prod: start plugin mem: unavailable\n",
			"web-01: attempt 2 of 3 failed; tried again after the other VMs and a wait of 1m0s: job \"web\" vm \"web-01\": not tried: source source.mem.prod: start plugin mem: unavailable\n",
		} {
			if !strings.Contains(notices, n) {
				t.Errorf("notices lack %q:\n%s", n, notices)
			}
		}
		same(t, "the retry's point", f.pointImage("web-01", web.RestorePoint, 2), want)
	})
}

// A VM that fails with an error of a permanent class is not tried again,
// and the session does not wait for anything.
func TestPermanentErrorIsNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "web-01")
		f.job.VMs = []string{"web-01", "ghost"}
		f.job.Retry = config.Retry{Attempts: 3, Wait: 10 * time.Minute}
		ev := f.recordEvents()
		start := time.Now()
		s := f.run()
		if took := time.Since(start); took != 0 {
			t.Fatalf("the session took %s, want no wait", took)
		}
		ghost := vmResult(t, s, "ghost")
		if s.Result != catalog.ResultWarning || ghost.Result != catalog.ResultFailed || ghost.Attempts != 1 ||
			!strings.Contains(ghost.Error, "not found on source") {
			t.Fatalf("session %s: %+v", s.Result, s.VMs)
		}
		if !errors.Is(ev.errs["ghost"], errdefs.ErrNotFound) {
			t.Fatalf("the VM's error %v lost its class", ev.errs["ghost"])
		}
		if n := ev.noticesText(); !strings.Contains(n, "ghost: not tried again: the error (not found) does not go away by waiting") ||
			strings.Contains(n, "attempt 2") {
			t.Fatalf("notices:\n%s", n)
		}
	})
}

// A VM that fails at every attempt ends failed with the last attempt's
// error and the number of attempts; its earlier restore point stays.
func TestRetriesExhausted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "web-01")
		f.job.Retry = config.Retry{Attempts: 4, Wait: time.Minute}
		f.runOK("web-01")
		first := f.points("web-01")
		f.write("web-01", 0, 10)
		f.comps.source = &flakySource{MemSource: f.comps.src, vm: "web-01", fails: -1, err: unavailable}
		ev := f.recordEvents()
		start := time.Now()
		s := f.run()
		if took := time.Since(start); took != 3*time.Minute {
			t.Fatalf("the session took %s, want three waits of 1m", took)
		}
		web := vmResult(t, s, "web-01")
		if s.Result != catalog.ResultFailed || web.Result != catalog.ResultFailed || web.Attempts != 4 ||
			!strings.Contains(web.Error, "read 4 refused: unavailable") || web.RestorePoint != "" {
			t.Fatalf("session %s: %+v", s.Result, s.VMs)
		}
		if fmt.Sprint(ev.finished["web-01"]) != "[4]" || !errors.Is(ev.errs["web-01"], errdefs.ErrUnavailable) {
			t.Fatalf("VMFinished attempts %v, error %v", ev.finished["web-01"], ev.errs["web-01"])
		}
		if n := ev.noticesText(); !strings.Contains(n, "web-01: failed at each of its 4 attempts") {
			t.Fatalf("notices:\n%s", n)
		}
		if ps := f.points("web-01"); len(ps) != 1 || ps[0].ID != first[0].ID {
			t.Fatalf("points %+v, want the earlier one alone", ps)
		}
	})
}

// attempts = 1 never tries again, whatever the error.
func TestOneAttemptNeverRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "web-01")
		f.job.Retry = config.Retry{Attempts: 1, Wait: 10 * time.Minute}
		f.write("web-01", 0, 10)
		flaky := &flakySource{MemSource: f.comps.src, vm: "web-01", fails: 1, err: unavailable}
		f.comps.source = flaky
		ev := f.recordEvents()
		start := time.Now()
		s := f.run()
		if took := time.Since(start); took != 0 {
			t.Fatalf("the session took %s, want no wait", took)
		}
		if web := vmResult(t, s, "web-01"); web.Result != catalog.ResultFailed || web.Attempts != 1 || flaky.failed() != 1 {
			t.Fatalf("session %s: %+v", s.Result, s.VMs)
		}
		if n := ev.noticesText(); strings.Contains(n, "attempt") {
			t.Fatalf("notices about attempts with retries off:\n%s", n)
		}
	})
}

// The wait between attempts ends as soon as the session's context does:
// the session ends interrupted, the VM keeps its failed attempt's result,
// and the job can run again at once.
func TestRetryWaitEndsWithTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, "web-01")
		f.job.Retry = config.Retry{Attempts: 3, Wait: 10 * time.Minute}
		f.runOK("web-01")
		f.write("web-01", 0, 10)
		f.comps.source = &flakySource{MemSource: f.comps.src, vm: "web-01", fails: 1, err: unavailable}
		ev := f.recordEvents()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		start := time.Now()
		var (
			s      *catalog.Session
			err    error
			took   time.Duration
			waited atomic.Bool
		)
		done := make(chan struct{})
		go func() {
			defer close(done)
			s, err = f.eng.Run(ctx, f.job)
			took = time.Since(start)
		}()
		time.Sleep(time.Minute)
		synctest.Wait()
		select {
		case <-done:
		default:
			waited.Store(true)
		}
		cancel()
		<-done
		if !waited.Load() || took != time.Minute {
			t.Fatalf("the session ended after %s (still waiting after 1m: %t), want at the cancel after 1m", took, waited.Load())
		}
		if !errors.Is(err, context.Canceled) || s == nil || s.Result != catalog.ResultFailed {
			t.Fatalf("Run = %v, session %+v", err, s)
		}
		web := vmResult(t, s, "web-01")
		if web.Result != catalog.ResultFailed || web.Attempts != 1 || !strings.Contains(web.Error, "read 1 refused") {
			t.Fatalf("vm %+v", web)
		}
		if fmt.Sprint(ev.finished["web-01"]) != "[1]" {
			t.Fatalf("VMFinished attempts %v, want the first attempt's once", ev.finished["web-01"])
		}
		saved, err := f.cat.Session(s.ID)
		if err != nil || saved.Result != catalog.ResultFailed || vmResult(t, saved, "web-01").Attempts != 1 {
			t.Fatalf("saved session %+v, %v", saved, err)
		}
		f.comps.source = nil
		f.runOK("web-01")
	})
}

// The engine's errors keep the class of their cause, through the VM and
// disk they name, so that Retryable can tell them apart.
func TestEngineErrorsKeepTheirClass(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(f *fixture)
		class error
	}{
		{"unknown VM", func(f *fixture) { f.job.VMs = []string{"ghost"} }, errdefs.ErrNotFound},
		{"source gone mid-copy", func(f *fixture) {
			f.write("web-01", 0, 10)
			f.comps.source = &flakySource{MemSource: f.comps.src, vm: "web-01", fails: 1, err: func(int) error {
				return errdefs.WithClass("plugin source local exited", errdefs.ErrPluginExited)
			}}
		}, errdefs.ErrPluginExited},
		{"listed twice", func(f *fixture) {
			f.comps.src = sdktest.NewMemSource(sdk.VM{ID: "vm-17", Name: "web-01", Disks: []sdk.Disk{{Capacity: diskSize}}})
			f.job.VMs = []string{"vm-17", "web-01"}
		}, errdefs.ErrInvalidArgument},
		{"committed replica", func(f *fixture) {
			// What `ferry failover commit` records.
			f.run()
			rec, err := f.cat.Replica("web", "web-01")
			if err != nil {
				t.Fatal(err)
			}
			rec.State = sdk.ReplicaCommitted
			if err := f.cat.PutReplica(rec); err != nil {
				t.Fatal(err)
			}
		}, errdefs.ErrFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "web-01")
			tc.setup(f)
			ev := f.recordEvents()
			s := f.run()
			var failed []string
			for _, vm := range s.VMs {
				if vm.Result == catalog.ResultFailed {
					failed = append(failed, vm.VM)
				}
			}
			if len(failed) != 1 {
				t.Fatalf("failed VMs %v, want one: %+v", failed, s.VMs)
			}
			err := ev.errs[failed[0]]
			if !errors.Is(err, tc.class) || Retryable(err) != (tc.class == errdefs.ErrPluginExited) {
				t.Fatalf("error %v: class %q, want %v", err, errdefs.Class(err), tc.class)
			}
		})
	}
}
