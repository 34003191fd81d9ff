package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	bolt "go.etcd.io/bbolt"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 22, 1, 2, 3, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// openTest opens a catalog in a fresh folder with a fake clock and closes
// it when the test ends.
func openTest(t *testing.T) (*Catalog, *fakeClock) {
	t.Helper()
	clock := newClock()
	c, err := Open(filepath.Join(t.TempDir(), "catalog.db"), Options{Clock: clock.Now, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, clock
}

// sameJSON fails the test unless got and want encode alike: the catalog's
// records are JSON, so this is what "read back the same" means.
func sameJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	g, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g, w) {
		t.Fatalf("%s:\n got  %s\n want %s", what, g, w)
	}
}

func TestDefaultPath(t *testing.T) {
	for _, tc := range []struct {
		name, dir, want string
	}{
		{"absolute", "/etc/ferry", "/etc/ferry/.ferry/catalog.db"},
		{"relative", "conf", "conf/.ferry/catalog.db"},
		{"current folder", ".", ".ferry/catalog.db"},
		{"trailing slash", "/srv/dr/", "/srv/dr/.ferry/catalog.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DefaultPath(tc.dir); got != tc.want {
				t.Fatalf("DefaultPath(%q) = %q, want %q", tc.dir, got, tc.want)
			}
		})
	}
}

func TestOpenCreatesFolderAndFile(t *testing.T) {
	path := DefaultPath(filepath.Join(t.TempDir(), "config"))
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Fatalf("catalog file mode %v, want 0600", perm)
	}
	if c.Path() != path {
		t.Fatalf("Path() = %q, want %q", c.Path(), path)
	}
	if v := schemaVersion(t, c); v != len(migrations) {
		t.Fatalf("new catalog at schema version %d, want %d", v, len(migrations))
	}
}

// schemaVersion reads the version an open catalog records.
func schemaVersion(t *testing.T, c *Catalog) int {
	t.Helper()
	var v int
	if err := c.rawView(func(tx *bolt.Tx) error {
		var err error
		v, err = readVersion(tx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestReopenKeepsRecords(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "catalog.db")
	opts := Options{Clock: clock.Now, Timeout: time.Second}
	c, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.BeginSession("web-tier")
	if err != nil {
		t.Fatal(err)
	}
	s.VMs = []VMResult{{VM: "web-01", Replica: "vm-9", RestorePoint: "snap-1", Result: ResultSuccess, Duration: time.Minute,
		Disks: []DiskResult{{Index: 0, Mode: ModeFull, Lane: LaneStream, BytesRead: 10, BytesSent: 4, BytesWritten: 10, BlocksChanged: 2, BlocksTotal: 2, Size: 1 << 30, Duration: time.Second}}}}
	s.Result = ResultSuccess
	clock.Advance(time.Minute)
	if err := c.SaveSession(s); err != nil {
		t.Fatal(err)
	}
	r := &Replica{Job: "web-tier", VM: "web-01", SourceID: "vm-1", ReplicaID: "vm-9", ReplicaName: "web-01_replica",
		Target: "vsphere.dr", State: sdk.ReplicaReady, Disks: []ReplicaDisk{{Index: 0, Capacity: 1 << 30}}, LastSession: s.ID}
	if err := c.PutReplica(r); err != nil {
		t.Fatal(err)
	}
	p := &RestorePoint{Job: "web-tier", VM: "web-01", ID: "snap-1", Created: clock.Now(), Size: 4096, Session: s.ID,
		Disks: []PointDisk{{Index: 0, Capacity: 1 << 30, ChangeID: "52 1a/7"}}}
	if err := c.AddRestorePoint(p); err != nil {
		t.Fatal(err)
	}
	js := &JobState{Job: "web-tier", Fingerprint: "abc123", LastSession: s.ID, LastSuccess: s.ID}
	if err := c.PutJobState(js); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c, err = Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	gotS, err := c.Session(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "session", gotS, s)
	gotR, err := c.Replica("web-tier", "web-01")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "replica", gotR, r)
	gotP, err := c.RestorePoints("web-tier", "web-01")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "restore points", gotP, []RestorePoint{*p})
	gotJ, err := c.JobState("web-tier")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "job state", gotJ, js)
}

func TestOpenRefuses(t *testing.T) {
	if _, err := Open("", Options{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("Open(\"\") = %v, want ErrInvalidArgument", err)
	}
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string) // makes the file, or not
		opts    Options
		class   error  // when set, the error must match it
		want    string // text the error must hold besides the path
	}{
		{
			name:    "negative timeout",
			prepare: func(*testing.T, string) {},
			opts:    Options{Timeout: -time.Second},
			class:   errdefs.ErrInvalidArgument,
			want:    "negative lock timeout",
		},
		{
			name: "not a bbolt file",
			prepare: func(t *testing.T, path string) {
				if err := os.WriteFile(path, bytes.Repeat([]byte("ferry.hcl "), 1000), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want: "not a readable catalog file",
		},
		{
			name: "a bbolt file of something else",
			prepare: func(t *testing.T, path string) {
				db, err := bolt.Open(path, 0o600, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				if err := db.Update(func(tx *bolt.Tx) error {
					_, err := tx.CreateBucket([]byte("widgets"))
					return err
				}); err != nil {
					t.Fatal(err)
				}
			},
			want: `not a ferry catalog: it has buckets ["widgets"]`,
		},
		{
			name: "damaged schema version",
			prepare: func(t *testing.T, path string) {
				c, err := Open(path, Options{})
				if err != nil {
					t.Fatal(err)
				}
				setRawVersion(t, c, "one")
			},
			want: `schema version "one" is not a positive number`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "catalog.db")
			tc.prepare(t, path)
			before, _ := os.ReadFile(path)
			c, err := Open(path, tc.opts)
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %s and say %q", err, path, tc.want)
			}
			if tc.class != nil && !errors.Is(err, tc.class) {
				t.Fatalf("error %q does not match %v", err, tc.class)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Fatal("a refused file was changed")
			}
		})
	}
}

// setRawVersion writes v as the schema version of the catalog and closes
// it.
func setRawVersion(t *testing.T, c *Catalog, v string) {
	t.Helper()
	if err := c.rawUpdate(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchemaVersion, []byte(v))
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenTwiceInProcess(t *testing.T) {
	c, _ := openTest(t)
	second, err := Open(c.Path(), Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("a second Open of a catalog in use: %v", err)
	}
	defer second.Close()
	if err := second.PutJobState(&JobState{Job: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.JobState("web"); err != nil {
		t.Fatalf("a record written through the other value: %v", err)
	}

	// A transaction in progress makes the others wait, and a wait has an
	// end: bbolt polls the lock every 50ms and gives up on the last poll
	// before the timeout.
	inside, release, done := make(chan struct{}), make(chan struct{}), make(chan error)
	go func() {
		done <- c.Update(func(*Tx) error {
			close(inside)
			<-release
			return nil
		})
	}()
	<-inside
	start := time.Now()
	third, err := Open(c.Path(), Options{Timeout: 100 * time.Millisecond})
	waited := time.Since(start)
	if err == nil {
		third.Close()
		t.Fatal("Open during another value's write transaction succeeded")
	}
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), c.Path()) || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("error %q is not a clear lock error naming the file", err)
	}
	if waited < 40*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("waited %s for a 100ms timeout", waited)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	again, err := Open(c.Path(), Options{Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after the transaction: %v", err)
	}
	again.Close()
}

func TestClose(t *testing.T) {
	c, _ := openTest(t)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Sessions("", 0); err == nil {
		t.Fatal("a read after Close succeeded")
	}
	if _, err := c.BeginSession("web"); err == nil {
		t.Fatal("a write after Close succeeded")
	}
}

func TestUpdateIsAtomic(t *testing.T) {
	c, clock := openTest(t)
	s, err := c.BeginSession("web")
	if err != nil {
		t.Fatal(err)
	}
	commitVM := func(tx *Tx) error {
		if err := tx.PutReplica(&Replica{Job: "web", VM: "web-01", ReplicaID: "r1", State: sdk.ReplicaReady}); err != nil {
			return err
		}
		if err := tx.AddRestorePoint(&RestorePoint{Job: "web", VM: "web-01", ID: "p1", Created: clock.Now()}); err != nil {
			return err
		}
		return tx.SaveSessionVM(s.ID, VMResult{VM: "web-01", Replica: "r1", RestorePoint: "p1", Result: ResultSuccess})
	}
	boom := errors.New("boom")

	err = c.Update(func(tx *Tx) error {
		if err := commitVM(tx); err != nil {
			return err
		}
		return boom
	})
	if err != boom {
		t.Fatalf("Update returned %v, want the function's own error", err)
	}
	func() {
		defer func() {
			// fn's own panic goes on as it was: it is not a damaged file.
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v, want fn's own panic", r)
			}
		}()
		_ = c.Update(func(tx *Tx) error {
			if err := commitVM(tx); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	assertVMCommitted(t, c, s.ID, false)

	if err := c.Update(commitVM); err != nil {
		t.Fatal(err)
	}
	assertVMCommitted(t, c, s.ID, true)
}

// assertVMCommitted checks that the replica, point and session result of
// web-01 are all there, or all absent.
func assertVMCommitted(t *testing.T, c *Catalog, session string, want bool) {
	t.Helper()
	_, err := c.Replica("web", "web-01")
	replica := err == nil
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatal(err)
	}
	points, err := c.RestorePoints("web", "web-01")
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Session(session)
	if err != nil {
		t.Fatal(err)
	}
	if got := [3]bool{replica, len(points) == 1, len(s.VMs) == 1}; got != [3]bool{want, want, want} {
		t.Fatalf("replica, point, session result present = %v, want all %v", got, want)
	}
}

func TestViewRefusesWrites(t *testing.T) {
	c, _ := openTest(t)
	err := c.View(func(tx *Tx) error {
		return tx.PutReplica(&Replica{Job: "web", VM: "web-01", ReplicaID: "r1", State: sdk.ReplicaReady})
	})
	if err == nil {
		t.Fatal("a write in View succeeded")
	}
	if _, err := c.Replica("web", "web-01"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("after a refused write: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	c, clock := openTest(t)
	const workers, rounds = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			job := "job-" + string(rune('a'+w))
			for i := range rounds {
				vm := job + "-vm-" + string(rune('a'+i%26))
				s, err := c.BeginSession(job)
				if err == nil {
					err = c.PutReplica(&Replica{Job: job, VM: vm, ReplicaID: "r-" + vm, State: sdk.ReplicaReady})
				}
				if err == nil {
					clock.Advance(time.Millisecond)
					err = c.AddRestorePoint(&RestorePoint{Job: job, VM: vm, ID: s.ID, Created: clock.Now()})
				}
				if err == nil {
					s.Result = ResultSuccess
					err = c.SaveSession(s)
				}
				if err == nil {
					_, err = c.Sessions("", 5)
				}
				if err == nil {
					_, err = c.Replicas(job)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	all, err := c.Sessions("", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != workers*rounds {
		t.Fatalf("%d sessions, want %d", len(all), workers*rounds)
	}
	points, err := c.RestorePoints("", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(points) != workers*rounds {
		t.Fatalf("%d restore points, want %d", len(points), workers*rounds)
	}
	replicas, err := c.Replicas("")
	if err != nil {
		t.Fatal(err)
	}
	if len(replicas) != workers*rounds {
		t.Fatalf("%d replicas, want %d", len(replicas), workers*rounds)
	}
}

// rawView and rawUpdate run fn on the bbolt file itself, for tests that
// look at or plant what the package's methods never would.
func (c *Catalog) rawView(fn func(tx *bolt.Tx) error) error {
	return c.withDB(false, func(db *bolt.DB) error { return db.View(fn) })
}

func (c *Catalog) rawUpdate(fn func(tx *bolt.Tx) error) error {
	return c.withDB(true, func(db *bolt.DB) error { return db.Update(fn) })
}
