package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestBeginSession(t *testing.T) {
	clock := newClock()
	c, err := Open(filepath.Join(t.TempDir(), "catalog.db"), Options{
		Clock: clock.Now,
		Rand:  bytes.NewReader([]byte{0xab, 0xcd, 0x01, 0x02}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.BeginSession("web")
	if err != nil {
		t.Fatal(err)
	}
	want := Session{ID: "20261122T010203Z-abcd", Job: "web", Started: clock.Now(), Result: ResultRunning, Owner: self()}
	sameJSON(t, "begun session", s, want)
	stored, err := c.Session(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "stored session", stored, want)

	// Same second, the next random bytes: a different id.
	s2, err := c.BeginSession("db")
	if err != nil {
		t.Fatal(err)
	}
	if s2.ID != "20261122T010203Z-0102" {
		t.Fatalf("second id %q", s2.ID)
	}
}

func TestBeginSessionRealIDs(t *testing.T) {
	c, _ := openTest(t)
	format := regexp.MustCompile(`^\d{8}T\d{6}Z-[0-9a-f]{4}$`)
	seen := map[string]bool{}
	for range 50 {
		s, err := c.BeginSession("web")
		if err != nil {
			t.Fatal(err)
		}
		if !format.MatchString(s.ID) {
			t.Fatalf("id %q does not match %s", s.ID, format)
		}
		if seen[s.ID] {
			t.Fatalf("id %q given twice", s.ID)
		}
		seen[s.ID] = true
		s.Result = ResultSuccess
		if err := c.SaveSession(s); err != nil {
			t.Fatal(err)
		}
	}
}

// repeatReader returns the same bytes forever.
type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func TestBeginSessionIDCollision(t *testing.T) {
	clock := newClock()
	c, err := Open(filepath.Join(t.TempDir(), "catalog.db"), Options{Clock: clock.Now, Rand: repeatReader(7)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first, err := c.BeginSession("web")
	if err != nil {
		t.Fatal(err)
	}
	first.Result = ResultSuccess
	if err := c.SaveSession(first); err != nil {
		t.Fatal(err)
	}
	if _, err := c.BeginSession("web"); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("a colliding id: %v, want ErrAlreadyExists", err)
	}
	// The failed begin released the job's lock: the next one works.
	clock.Advance(time.Second)
	second, err := c.BeginSession("web")
	if err != nil {
		t.Fatalf("next second: %v", err)
	}
	if second.ID == first.ID {
		t.Fatal("same id twice")
	}
	all, err := c.Sessions("", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("%d sessions, want 2", len(all))
	}
}

func ids(ss []Session) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

func TestSessionsNewestFirst(t *testing.T) {
	c, clock := openTest(t)
	// Sessions with given ids, the clock standing still or going back: the
	// order must not depend on it.
	var order []string
	for _, step := range []struct {
		job  string
		move time.Duration
	}{
		{"web", 0}, {"db", 0}, {"web", 0}, {"web", -time.Hour}, {"db", time.Minute}, {"web-tier", 0},
	} {
		clock.Advance(step.move)
		s := &Session{ID: fmt.Sprintf("s%d", len(order)), Job: step.job, Result: ResultRunning}
		if err := c.SaveSession(s); err != nil {
			t.Fatal(err)
		}
		order = append(order, s.ID)
	}
	// Saving again (progress, end) keeps a session's place.
	s0, err := c.Session("s0")
	if err != nil {
		t.Fatal(err)
	}
	s0.Result = ResultSuccess
	if err := c.SaveSession(s0); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		job   string
		limit int
		want  []string
	}{
		{"", 0, []string{"s5", "s4", "s3", "s2", "s1", "s0"}},
		{"", 2, []string{"s5", "s4"}},
		{"", -1, []string{"s5", "s4", "s3", "s2", "s1", "s0"}},
		{"web", 0, []string{"s3", "s2", "s0"}},
		{"web", 2, []string{"s3", "s2"}},
		{"db", 10, []string{"s4", "s1"}},
		{"web-tier", 0, []string{"s5"}},
		{"we", 0, nil},
		{"nope", 0, nil},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.job, tc.limit), func(t *testing.T) {
			got, err := c.Sessions(tc.job, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(ids(got)) != fmt.Sprint(tc.want) {
				t.Fatalf("Sessions(%q, %d) = %v, want %v", tc.job, tc.limit, ids(got), tc.want)
			}
		})
	}
}

func TestSaveSessionFillsTimes(t *testing.T) {
	c, clock := openTest(t)
	start := clock.Now()
	s := &Session{ID: "given-1", Job: "web", Result: ResultRunning}
	if err := c.SaveSession(s); err != nil {
		t.Fatal(err)
	}
	if !s.Started.Equal(start) || !s.Ended.IsZero() {
		t.Fatalf("running session: started %v ended %v", s.Started, s.Ended)
	}
	clock.Advance(10 * time.Minute)
	s.Result = ResultWarning
	s.Error = "web-02 was skipped"
	if err := c.SaveSession(s); err != nil {
		t.Fatal(err)
	}
	if !s.Started.Equal(start) || !s.Ended.Equal(clock.Now()) {
		t.Fatalf("ended session: started %v ended %v", s.Started, s.Ended)
	}
	got, err := c.Session("given-1")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "session", got, s)
	// An explicit end time is kept.
	end := start.Add(time.Minute)
	s.Ended = end
	if err := c.SaveSession(s); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Session("given-1"); !got.Ended.Equal(end) {
		t.Fatalf("ended %v, want %v", got.Ended, end)
	}
}

func TestSaveSessionInvalid(t *testing.T) {
	c, _ := openTest(t)
	if err := c.SaveSession(&Session{ID: "taken", Job: "web", Result: ResultRunning}); err != nil {
		t.Fatal(err)
	}
	ok := func() *Session {
		return &Session{ID: "s1", Job: "web", Result: ResultRunning, VMs: []VMResult{{VM: "web-01", Result: ResultRunning}}}
	}
	for _, tc := range []struct {
		name   string
		change func(s *Session)
		want   string
	}{
		{"empty id", func(s *Session) { s.ID = "" }, "empty session id"},
		{"empty job", func(s *Session) { s.Job = "" }, "empty job"},
		{"NUL in job", func(s *Session) { s.Job = "web\x00db" }, "contains a NUL byte"},
		{"unknown result", func(s *Session) { s.Result = "ok" }, `unknown result "ok"`},
		{"empty result", func(s *Session) { s.Result = "" }, `unknown result ""`},
		{"vm without name", func(s *Session) { s.VMs[0].VM = "" }, "empty vm"},
		{"vm result", func(s *Session) { s.VMs[0].Result = "done" }, `vm "web-01": unknown result "done"`},
		{"vm twice", func(s *Session) { s.VMs = append(s.VMs, s.VMs[0]) }, `vm "web-01" listed twice`},
		{"vm attempts", func(s *Session) { s.VMs[0].Attempts = -1 }, `vm "web-01": -1 attempts`},
		{"disk mode", func(s *Session) { s.VMs[0].Disks = []DiskResult{{Index: 1, Mode: "cbt"}} }, `disk 1: unknown mode "cbt"`},
		{"disk lane", func(s *Session) { s.VMs[0].Disks = []DiskResult{{Index: 2, Lane: "hotadd"}} }, `disk 2: unknown lane "hotadd"`},
		{"start out of range", func(s *Session) { s.Started = time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC) }, "out of range"},
		{"other job", func(s *Session) { s.ID = "taken"; s.Job = "db" }, `belongs to job "web"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok()
			tc.change(s)
			err := c.SaveSession(s)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SaveSession = %v, want ErrInvalidArgument saying %q", err, tc.want)
			}
		})
	}
	all, err := c.Sessions("", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 {
		t.Fatalf("refused sessions were stored: %v", ids(all))
	}
	if _, err := c.BeginSession(""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("BeginSession(\"\") = %v", err)
	}
	if _, err := c.Sessions("a\x00b", 0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("Sessions with a NUL = %v", err)
	}
}

func TestSessionNotFound(t *testing.T) {
	c, _ := openTest(t)
	if _, err := c.Session("20261122T010203Z-abcd"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Session = %v, want ErrNotFound", err)
	}
	err := c.SaveSessionVM("nope", VMResult{VM: "web-01", Result: ResultSuccess})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("SaveSessionVM = %v, want ErrNotFound", err)
	}
}

func TestSaveSessionVMConcurrently(t *testing.T) {
	c, _ := openTest(t)
	s, err := c.BeginSession("web")
	if err != nil {
		t.Fatal(err)
	}
	const vms = 12
	var wg sync.WaitGroup
	errs := make(chan error, vms)
	for i := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vm := fmt.Sprintf("web-%02d", i)
			if err := c.SaveSessionVM(s.ID, VMResult{VM: vm, Result: ResultRunning}); err != nil {
				errs <- err
				return
			}
			// The same VM again, as a retry: replaced, not added.
			errs <- c.SaveSessionVM(s.ID, VMResult{VM: vm, Result: ResultSuccess, Attempts: 2, Disks: []DiskResult{{Index: 0, BytesSent: int64(i)}}})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Session(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	tot := got.Totals()
	if tot.VMs != vms || tot.Success != vms || tot.BytesSent != vms*(vms-1)/2 {
		t.Fatalf("after concurrent VM results: %+v", tot)
	}
	for _, vm := range got.VMs {
		if vm.Attempts != 2 {
			t.Fatalf("vm %s: %d attempts recorded, want the second result's 2", vm.VM, vm.Attempts)
		}
	}
}

func TestMarkAbandoned(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "catalog.db")
	opts := Options{Clock: clock.Now}

	// The process that dies: one session left running with a VM done and
	// a VM in flight, one session that ended.
	dead, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	left, err := dead.BeginSession("web")
	if err != nil {
		t.Fatal(err)
	}
	left.VMs = []VMResult{
		{VM: "web-01", Result: ResultSuccess, RestorePoint: "p1"},
		{VM: "web-02", Result: ResultRunning},
		{VM: "web-03", Result: ResultRunning, Error: "retrying: unavailable"},
	}
	if err := dead.SaveSession(left); err != nil {
		t.Fatal(err)
	}
	done, err := dead.BeginSession("db")
	if err != nil {
		t.Fatal(err)
	}
	done.Result = ResultSuccess
	if err := dead.SaveSession(done); err != nil {
		t.Fatal(err)
	}
	dead.Close()

	// The next process: its own session is running before it calls
	// MarkAbandoned.
	clock.Advance(time.Hour)
	c, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	own, err := c.BeginSession("web")
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.MarkAbandoned()
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("MarkAbandoned = %d, want 1", n)
	}
	got, err := c.Session(left.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := *left
	want.Result, want.Error, want.Ended = ResultFailed, "interrupted", clock.Now()
	want.VMs = []VMResult{
		{VM: "web-01", Result: ResultSuccess, RestorePoint: "p1"},
		{VM: "web-02", Result: ResultFailed, Error: "interrupted"},
		{VM: "web-03", Result: ResultFailed, Error: "retrying: unavailable"},
	}
	sameJSON(t, "abandoned session", got, want)
	for _, id := range []string{own.ID, done.ID} {
		s, err := c.Session(id)
		if err != nil {
			t.Fatal(err)
		}
		if s.Error != "" {
			t.Fatalf("session %s was marked: %+v", id, s)
		}
	}
	if n, err := c.MarkAbandoned(); err != nil || n != 0 {
		t.Fatalf("second MarkAbandoned = %d, %v; want 0", n, err)
	}
	// Once this process ends its own session, a later one is not touched.
	own.Result = ResultSuccess
	if err := c.SaveSession(own); err != nil {
		t.Fatal(err)
	}
	if n, err := c.MarkAbandoned(); err != nil || n != 0 {
		t.Fatalf("MarkAbandoned after the end = %d, %v; want 0", n, err)
	}
}

func TestTotals(t *testing.T) {
	disk := func(i int, n int64) DiskResult {
		return DiskResult{Index: i, BytesRead: n, BytesSent: n / 2, BytesWritten: n, BlocksChanged: n / 4096, BlocksTotal: 100, Size: 1 << 20}
	}
	for _, tc := range []struct {
		name string
		vms  []VMResult
		want Totals
	}{
		{"empty", nil, Totals{}},
		{
			"one vm two disks",
			[]VMResult{{VM: "a", Result: ResultSuccess, Disks: []DiskResult{disk(0, 8192), disk(1, 4096)}}},
			Totals{VMs: 1, Success: 1, Disks: 2, Size: 2 << 20, BytesRead: 12288, BytesSent: 6144, BytesWritten: 12288, BlocksChanged: 3, BlocksTotal: 200},
		},
		{
			"each result",
			[]VMResult{
				{VM: "a", Result: ResultRunning}, {VM: "b", Result: ResultSuccess},
				{VM: "c", Result: ResultWarning}, {VM: "d", Result: ResultFailed, Disks: []DiskResult{disk(0, 4096)}},
			},
			Totals{VMs: 4, Running: 1, Success: 1, Warning: 1, Failed: 1, Disks: 1, Size: 1 << 20, BytesRead: 4096, BytesSent: 2048, BytesWritten: 4096, BlocksChanged: 1, BlocksTotal: 100},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Session{VMs: tc.vms}
			if got := s.Totals(); got != tc.want {
				t.Fatalf("Totals = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSaveProgress(t *testing.T) {
	c, clock := openTest(t)
	s, err := c.BeginSession("web")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SaveSessionVM(s.ID, VMResult{VM: "web-01", Result: ResultSuccess}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	p := Progress{Done: 300, Total: 500, Disks: 2, DisksDone: 1, VMsDone: 1}
	if err := c.SaveProgress(s.ID, p); err != nil {
		t.Fatal(err)
	}
	got, err := c.Session(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := p
	want.Updated = clock.Now()
	if got.Progress == nil || *got.Progress != want || len(got.VMs) != 1 {
		t.Fatalf("after SaveProgress: progress %+v, %d VMs; want %+v and the VM kept", got.Progress, len(got.VMs), want)
	}

	// The engine saves its own copy, which has no progress: the recorded
	// progress and the owner stay while the session runs.
	copyOf := *s
	copyOf.Owner = nil
	copyOf.Warnings = []string{"a selector matched nothing"}
	if err := c.SaveSession(&copyOf); err != nil {
		t.Fatal(err)
	}
	if got, err = c.Session(s.ID); err != nil || got.Progress == nil || *got.Progress != want || got.Owner == nil || got.Owner.PID != os.Getpid() {
		t.Fatalf("after saving a copy without progress and owner: %+v, %v", got, err)
	}

	// Once it ends, the progress goes, and late progress is ignored.
	s.Result = ResultSuccess
	if err := c.SaveSession(s); err != nil {
		t.Fatal(err)
	}
	if err := c.SaveProgress(s.ID, Progress{Done: 1}); err != nil {
		t.Fatalf("late progress: %v", err)
	}
	if got, err = c.Session(s.ID); err != nil || got.Progress != nil || got.Result != ResultSuccess {
		t.Fatalf("after the end: %+v, %v", got, err)
	}
	if err := c.SaveProgress("nope", p); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("progress of an unknown session: %v, want ErrNotFound", err)
	}
}

func TestJobLockFiles(t *testing.T) {
	t.Parallel()
	path := filepath.Join("cfg", ".ferry", "catalog.db")
	seen := map[string]string{}
	for _, job := range []string{"web", "web-tier_2.b", "web/tier", "web tier", "wéb", "../../etc", strings.Repeat("x", 65)} {
		f := lockFile(path, job)
		if filepath.Dir(f) != path+".running" {
			t.Errorf("lock of %q is %s, outside %s.running", job, f, path)
		}
		if other, dup := seen[f]; dup {
			t.Errorf("jobs %q and %q share the lock %s", job, other, f)
		}
		seen[f] = job
	}
	if got := filepath.Base(lockFile(path, "web")); got != "job-web.lock" {
		t.Errorf("lock of web: %s", got)
	}
}
