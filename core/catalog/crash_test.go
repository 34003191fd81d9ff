package catalog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The crash and two-process tests run the test binary again as a helper
// process: FERRY_CATALOG_HELPER names what it does, FERRY_CATALOG_PATH the
// catalog, FERRY_CATALOG_FROM the first record number it writes.
const (
	envHelper = "FERRY_CATALOG_HELPER"
	envPath   = "FERRY_CATALOG_PATH"
	envFrom   = "FERRY_CATALOG_FROM"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envHelper) {
	case "":
		os.Exit(m.Run())
	case "write":
		os.Exit(helperWrite())
	case "hold":
		os.Exit(helperHold(false))
	case "hold-tx":
		os.Exit(helperHold(true))
	case "begin":
		os.Exit(helperBegin())
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", os.Getenv(envHelper))
		os.Exit(2)
	}
}

// crashClock is the fixed time of every record the writer makes, so the
// test can rebuild them exactly.
var crashClock = time.Date(2026, 11, 22, 1, 2, 3, 0, time.UTC)

const crashJob = "crash"

// crashVM names the VM of record i.
func crashVM(i int) string { return fmt.Sprintf("vm-%06d", i) }

// crashRecords are what transaction i writes: a finished session with
// VMs and disks and a long error (about 60 KiB, so one transaction spans
// many pages), a replica, a restore point and the job's state.
// putRecords writes one session, replica, point and job state.
func putRecords(tx *Tx, s *Session, r *Replica, p *RestorePoint, j *JobState) error {
	if err := tx.SaveSession(s); err != nil {
		return err
	}
	if err := tx.PutReplica(r); err != nil {
		return err
	}
	if err := tx.AddRestorePoint(p); err != nil {
		return err
	}
	return tx.PutJobState(j)
}

func crashRecords(i int) (*Session, *Replica, *RestorePoint, *JobState) {
	id := fmt.Sprintf("s%06d", i)
	s := &Session{ID: id, Job: crashJob, Started: crashClock, Ended: crashClock.Add(time.Duration(i) * time.Second),
		Result: ResultWarning, Error: strings.Repeat(fmt.Sprintf("record %d is whole; ", i), 2500)}
	for v := range 16 {
		vm := VMResult{VM: fmt.Sprintf("%s-%02d", crashVM(i), v), Replica: "r" + id, RestorePoint: "p" + id, Result: ResultSuccess, Duration: time.Duration(i)}
		for d := range 2 {
			vm.Disks = append(vm.Disks, DiskResult{Index: d, Mode: ModeDigest, Lane: LaneDirect, BytesRead: int64(i), BytesSent: int64(v), BytesWritten: int64(d), Size: 1 << 30})
		}
		s.VMs = append(s.VMs, vm)
	}
	r := &Replica{Job: crashJob, VM: crashVM(i), ReplicaID: "r" + id, Target: "lab.dr", State: sdk.ReplicaReady,
		Disks: []ReplicaDisk{{Index: 0, Capacity: int64(i)}}, Created: crashClock, Updated: crashClock, LastSession: id}
	p := &RestorePoint{Job: crashJob, VM: crashVM(i), ID: "p" + id, Created: crashClock.Add(time.Duration(i) * time.Minute), Size: int64(i), Session: id,
		Disks: []PointDisk{{Index: 0, Capacity: int64(i), ChangeID: "c" + id}}}
	j := &JobState{Job: crashJob, Fingerprint: "f" + id, LastSession: id, LastSuccess: id, Updated: crashClock}
	return s, r, p, j
}

// helperWrite begins a session that it never ends, then commits
// crashRecords(from), crashRecords(from+1)... one transaction each,
// printing each number once it is committed, until it is killed.
func helperWrite() int {
	from, err := strconv.Atoi(os.Getenv(envFrom))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	c, err := Open(os.Getenv(envPath), Options{Clock: func() time.Time { return crashClock }, Timeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := c.BeginSession("crash-runner"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := from; ; i++ {
		s, r, p, j := crashRecords(i)
		err := c.Update(func(tx *Tx) error { return putRecords(tx, s, r, p, j) })
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(i)
	}
}

// helperHold opens the catalog, says "ready", and keeps it (inside a
// write transaction when inTx is set) until killed.
func helperHold(inTx bool) int {
	c, err := Open(os.Getenv(envPath), Options{Timeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	hold := func() {
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	if !inTx {
		hold()
		return 0
	}
	if err := c.Update(func(*Tx) error { hold(); return nil }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// helperBegin opens the catalog, begins a session of job "web", prints its
// id and keeps it running until killed.
func helperBegin() int {
	c, err := Open(os.Getenv(envPath), Options{Timeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	s, err := c.BeginSession("web")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(s.ID)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// helper starts the test binary as helper kind and returns it with its
// standard output.
func helper(t *testing.T, kind, path string, from int) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelper+"="+kind, envPath+"="+path, envFrom+"="+strconv.Itoa(from))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.StdinPipe(); err != nil { // kept open: the holder waits on it
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, bufio.NewScanner(out)
}

// kill SIGKILLs cmd and waits for it, checking that the signal, not an
// error of its own, ended it.
func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("helper ended with %v, want killed", err)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, want killed by SIGKILL", err)
	}
}

func TestKillDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts helper processes")
	}
	path := filepath.Join(t.TempDir(), "catalog.db")
	next := 0 // the first record the next writer makes
	seed := time.Now().UnixNano()
	t.Logf("kill times seeded with %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	for round, after := range []int{20, 30, 40} {
		cmd, out := helper(t, "write", path, next)
		last := -1
		var lastAt time.Time
		var gap time.Duration // between the last two reports: one transaction
		for last < next+after && out.Scan() {
			n, err := strconv.Atoi(out.Text())
			if err != nil {
				t.Fatalf("round %d: writer said %q", round, out.Text())
			}
			if !lastAt.IsZero() {
				gap = time.Since(lastAt)
			}
			last, lastAt = n, time.Now()
		}
		if last < next+after {
			t.Fatalf("round %d: writer stopped after record %d", round, last)
		}
		// Kill it at a random moment of the next transaction: encoding,
		// page writes or sync.
		time.Sleep(time.Duration(rng.Int64N(int64(gap) + 1)))
		kill(t, cmd)

		c, err := Open(path, Options{Timeout: time.Second})
		if err != nil {
			t.Fatalf("round %d: reopen after the kill: %v", round, err)
		}
		n := verifyCrashRecords(t, c, last)
		// The writer's own session was left running: it is abandoned.
		if got, err := c.MarkAbandoned(); err != nil || got != 1 {
			t.Fatalf("round %d: MarkAbandoned = %d, %v; want 1", round, got, err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: killed after record %d was reported, %d records in the catalog", round, last, n)
		next = n
	}
}

// verifyCrashRecords checks that records 0..n-1 are in the catalog, each
// whole and each exactly as written, that nothing else is, and that n
// covers every record the writer reported (reported is the last one). It
// returns n.
func verifyCrashRecords(t *testing.T, c *Catalog, reported int) int {
	t.Helper()
	sessions, err := c.Sessions(crashJob, 0)
	if err != nil {
		t.Fatal(err)
	}
	replicas, err := c.Replicas(crashJob)
	if err != nil {
		t.Fatal(err)
	}
	points, err := c.RestorePoints(crashJob, "")
	if err != nil {
		t.Fatal(err)
	}
	n := len(sessions)
	if len(replicas) != n || len(points) != n {
		t.Fatalf("a transaction was cut: %d sessions, %d replicas, %d restore points", n, len(replicas), len(points))
	}
	// Every reported record is there. The writer may have committed more
	// than the test read of its reports before the kill (its reports wait
	// in a pipe; on a busy machine several of them), so there is no upper
	// bound: what matters is that each record present is whole.
	if n < reported+1 {
		t.Fatalf("%d records after the writer reported record %d", n, reported)
	}
	for i := range n {
		s, r, p, _ := crashRecords(i)
		sameJSON(t, fmt.Sprintf("session %d", i), sessions[n-1-i], s)
		sameJSON(t, fmt.Sprintf("replica %d", i), replicas[i], r)
		sameJSON(t, fmt.Sprintf("restore point %d", i), points[i], p)
	}
	_, _, _, j := crashRecords(n - 1)
	got, err := c.JobState(crashJob)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "job state", got, j)
	return n
}

func TestSecondProcessTimesOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a helper process")
	}
	path := filepath.Join(t.TempDir(), "catalog.db")
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	cmd, out := helper(t, "hold-tx", path, 0)
	if !out.Scan() || out.Text() != "ready" {
		t.Fatalf("holder did not get ready: %q %v", out.Text(), out.Err())
	}

	start := time.Now()
	c, err = Open(path, Options{Timeout: 200 * time.Millisecond})
	waited := time.Since(start)
	if err == nil {
		c.Close()
		t.Fatal("Open succeeded while another process is in a write transaction")
	}
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("error %q is not a clear lock error naming the file", err)
	}
	if waited < 100*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("gave up after %s with a 200ms timeout", waited)
	}

	// A holder that dies releases the catalog.
	kill(t, cmd)
	c, err = Open(path, Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after the holder died: %v", err)
	}
	c.Close()
}

// TestTwoProcessesShareTheCatalog is a catalog kept open by one process
// (a long run) while another reads and writes it.
func TestTwoProcessesShareTheCatalog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a helper process")
	}
	path := filepath.Join(t.TempDir(), "catalog.db")
	_, out := helper(t, "hold", path, 0)
	if !out.Scan() || out.Text() != "ready" {
		t.Fatalf("holder did not get ready: %q %v", out.Text(), out.Err())
	}
	c, err := Open(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("Open while another process has the catalog open: %v", err)
	}
	defer c.Close()
	if err := c.PutJobState(&JobState{Job: "web"}); err != nil {
		t.Fatalf("write while another process has the catalog open: %v", err)
	}
	if _, err := c.JobState("web"); err != nil {
		t.Fatalf("read while another process has the catalog open: %v", err)
	}
}

// TestOneSessionPerJobAcrossProcesses: a session that another process runs
// blocks a second one of its job, not of other jobs, and is not abandoned;
// once that process dies, it is.
func TestOneSessionPerJobAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a helper process")
	}
	path := filepath.Join(t.TempDir(), "catalog.db")
	cmd, out := helper(t, "begin", path, 0)
	if !out.Scan() {
		t.Fatalf("the other process did not begin its session: %v", out.Err())
	}
	theirs := out.Text()

	c, err := Open(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.BeginSession("web")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("a second session of a running job: %v, want ErrFailedPrecondition", err)
	}
	for _, want := range []string{`job "web"`, theirs, fmt.Sprintf("process %d", cmd.Process.Pid), "one session of a job runs at a time"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("refusal %q does not say %q", err, want)
		}
	}
	other, err := c.BeginSession("db")
	if err != nil {
		t.Fatalf("a session of another job: %v", err)
	}
	if n, err := c.MarkAbandoned(); err != nil || n != 0 {
		t.Fatalf("MarkAbandoned while the other process runs = %d, %v; want 0", n, err)
	}
	s, err := c.Session(theirs)
	if err != nil {
		t.Fatal(err)
	}
	if s.Result != ResultRunning || s.Owner == nil || s.Owner.PID != cmd.Process.Pid {
		t.Fatalf("their session while they run: %+v", s)
	}

	kill(t, cmd)
	if n, err := c.MarkAbandoned(); err != nil || n != 1 {
		t.Fatalf("MarkAbandoned after the other process died = %d, %v; want 1", n, err)
	}
	if s, err = c.Session(theirs); err != nil || s.Result != ResultFailed || s.Error != Interrupted {
		t.Fatalf("their session after they died: %+v, %v", s, err)
	}
	if s, err = c.Session(other.ID); err != nil || s.Result != ResultRunning {
		t.Fatalf("our own session: %+v, %v", s, err)
	}
	if _, err := c.BeginSession("web"); err != nil {
		t.Fatalf("a session of the job after the other process died: %v", err)
	}
}
