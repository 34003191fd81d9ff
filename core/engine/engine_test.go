package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// memComponents hands out in-memory components; the engine's own logic
// is under test here, the plugin boundary in e2e.
type memComponents struct {
	src  *sdktest.MemSource
	tgt  *sdktest.MemTarget
	repo sdk.Repository
	err  error
	// source, when set, is handed out instead of src: a decorator of it.
	source sdk.Source
	// caps, when set, are declared instead of src's.
	caps *sdk.Capabilities
	// target, when set, is what proxies configure instead of tgt: a
	// decorator of it.
	target sdk.Target
	// srcErr, when set, is why the source cannot be configured.
	srcErr error
}

func (m *memComponents) Source(context.Context, *config.PluginBlock) (sdk.Source, sdk.Capabilities, error) {
	caps := m.src.Capabilities()
	if m.caps != nil {
		caps = *m.caps
	}
	if m.srcErr != nil {
		return nil, caps, m.srcErr
	}
	if m.source != nil {
		return m.source, caps, nil
	}
	return m.src, caps, nil
}
func (m *memComponents) Target(context.Context, *config.PluginBlock) (sdk.Target, sdk.Capabilities, error) {
	return m.tgt, m.tgt.Capabilities(), nil
}
func (m *memComponents) Repository(context.Context, *config.PluginBlock) (sdk.Repository, error) {
	return m.repo, m.err
}

const diskSize = 8 << 20

type fixture struct {
	t     *testing.T
	comps *memComponents
	cat   *catalog.Catalog
	eng   *Engine
	job   *config.Job
	rng   *rand.Rand
	// dials counts the connections each test proxy opened to other
	// proxies, by name (see startAgent).
	dials map[string]*atomic.Int64
}

func block(kind sdk.Kind, name string) *config.PluginBlock {
	return &config.PluginBlock{Kind: kind, Type: "mem", Name: name, Config: cty.EmptyObjectVal}
}

func newFixture(t *testing.T, vms ...string) *fixture {
	t.Helper()
	var list []sdk.VM
	for _, name := range vms {
		list = append(list, sdk.VM{Name: name, CPUs: 2, MemoryMiB: 1024,
			Disks: []sdk.Disk{{Capacity: diskSize}, {Capacity: diskSize / 2}},
			NICs:  []sdk.NIC{{Network: "prod", Addresses: []string{"10.1.0.5/24"}}}})
	}
	cat, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	f := &fixture{t: t, cat: cat, rng: rand.New(rand.NewPCG(1, 2)),
		comps: &memComponents{src: sdktest.NewMemSource(list...), tgt: sdktest.NewMemTarget(), repo: sdktest.NewMemRepository()}}
	f.eng = &Engine{Components: f.comps, Catalog: cat}
	f.job = &config.Job{Name: "web", Source: block(sdk.KindSource, "prod"), Target: block(sdk.KindTarget, "dr"),
		Repository: block(sdk.KindRepository, "meta"), VMs: vms, ReplicaSuffix: "_replica",
		Retention: config.Retention{RestorePoints: 7}, Transfer: config.Transfer{Compression: config.CompressionAuto}}
	return f
}

// write makes guest writes of random data, scattered over about pct
// percent of a disk.
func (f *fixture) write(vm string, disk int, pct float64) {
	f.t.Helper()
	size := int64(diskSize)
	if disk == 1 {
		size /= 2
	}
	for done := int64(0); done < int64(float64(size)*pct/100); {
		n := int64(4096 * (1 + f.rng.IntN(16)))
		off := f.rng.Int64N(size - n)
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(f.rng.Uint32())
		}
		if err := f.comps.src.WriteDisk(vm, disk, off, data); err != nil {
			f.t.Fatal(err)
		}
		done += n
	}
}

func (f *fixture) run() *catalog.Session {
	f.t.Helper()
	sess, err := f.eng.Run(context.Background(), f.job)
	if err != nil {
		f.t.Fatal(err)
	}
	return sess
}

// sourceImage reads a VM disk as the source has it now, through a
// snapshot.
func (f *fixture) sourceImage(vm string) [][]byte {
	f.t.Helper()
	ctx := context.Background()
	snap, err := f.comps.src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: vm, Name: "test-probe"})
	if err != nil {
		f.t.Fatal(err)
	}
	defer f.comps.src.RemoveSnapshot(ctx, vm, snap.ID)
	var out [][]byte
	for _, d := range snap.Disks {
		r, err := f.comps.src.OpenSnapshotDisk(ctx, vm, snap.ID, d.Index)
		if err != nil {
			f.t.Fatal(err)
		}
		out = append(out, readAll(f.t, r))
	}
	return out
}

func readAll(t *testing.T, r sdk.DiskReader) []byte {
	t.Helper()
	defer r.Close()
	b := make([]byte, r.Size())
	if _, err := r.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return b
}

func (f *fixture) points(vm string) []sdk.RestorePoint {
	f.t.Helper()
	ps, err := f.comps.tgt.ListRestorePoints(context.Background(), vm+"_replica")
	if err != nil {
		f.t.Fatal(err)
	}
	return ps
}

// pointImage reads every disk of a restore point.
func (f *fixture) pointImage(vm, point string, disks int) [][]byte {
	f.t.Helper()
	var out [][]byte
	for d := 0; d < disks; d++ {
		r, err := f.comps.tgt.OpenRestorePointDisk(context.Background(), vm+"_replica", point, d)
		if err != nil {
			f.t.Fatal(err)
		}
		out = append(out, readAll(f.t, r))
	}
	return out
}

func same(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	for d := range want {
		if !bytes.Equal(got[d], want[d]) {
			t.Fatalf("%s: disk %d differs", what, d)
		}
	}
}

func modes(s *catalog.Session) string {
	var out []string
	for _, vm := range s.VMs {
		for _, d := range vm.Disks {
			out = append(out, string(d.Mode))
		}
	}
	return strings.Join(out, ",")
}

func TestRunsLeaveExactRestorePoints(t *testing.T) {
	f := newFixture(t, "web-01")
	f.write("web-01", 0, 30)
	f.write("web-01", 1, 30)
	want1 := f.sourceImage("web-01")
	s1 := f.run()
	if s1.Result != catalog.ResultSuccess || modes(s1) != "full,full" {
		t.Fatalf("first run: %s, modes %s: %+v", s1.Result, modes(s1), s1.VMs)
	}

	f.write("web-01", 0, 1)
	want2 := f.sourceImage("web-01")
	s2 := f.run()
	if modes(s2) != "change-tracking,change-tracking" {
		t.Fatalf("second run modes %s", modes(s2))
	}
	if sent, full := s2.Totals().BytesSent, s1.Totals().BytesSent; sent*10 > full {
		t.Fatalf("an incremental run sent %d bytes, the full one %d", sent, full)
	}

	// Change tracking reset: digests find the changes.
	f.write("web-01", 1, 1)
	f.comps.src.ResetChangeTracking("web-01", 1)
	want3 := f.sourceImage("web-01")
	s3 := f.run()
	if modes(s3) != "change-tracking,digest" {
		t.Fatalf("third run modes %s", modes(s3))
	}

	ps := f.points("web-01")
	if len(ps) != 3 {
		t.Fatalf("%d restore points", len(ps))
	}
	same(t, "point 1", f.pointImage("web-01", ps[0].ID, 2), want1)
	same(t, "point 2", f.pointImage("web-01", ps[1].ID, 2), want2)
	same(t, "point 3", f.pointImage("web-01", ps[2].ID, 2), want3)

	cps, err := f.cat.RestorePoints("web", "web-01")
	if err != nil || len(cps) != 3 || cps[2].ID != ps[2].ID {
		t.Fatalf("catalog points = %+v, %v", cps, err)
	}
	snaps, _ := f.comps.src.ListSnapshots(context.Background(), "web-01")
	if len(snaps) != 0 {
		t.Fatalf("snapshots left at the source: %+v", snaps)
	}
}

func TestLostMetadataIsRecomputedFromTheReplica(t *testing.T) {
	f := newFixture(t, "db-01")
	f.write("db-01", 0, 40)
	f.run()
	f.comps.repo = sdktest.NewMemRepository() // the repository lost everything
	f.write("db-01", 0, 1)
	f.comps.src.ResetChangeTracking("db-01", 0)
	want := f.sourceImage("db-01")
	s := f.run()
	if modes(s) != "digest,change-tracking" {
		t.Fatalf("modes %s", modes(s))
	}
	if d := s.VMs[0].Disks[0]; d.BytesSent > diskSize/10 {
		t.Fatalf("after losing its metadata the run sent %d bytes of an %d-byte disk", d.BytesSent, diskSize)
	}
	ps := f.points("db-01")
	same(t, "newest point", f.pointImage("db-01", ps[len(ps)-1].ID, 2), want)
}

func TestRetentionKeepsTheNewest(t *testing.T) {
	f := newFixture(t, "web-01")
	f.job.Retention.RestorePoints = 2
	var images [][][]byte
	for i := 0; i < 4; i++ {
		f.write("web-01", 0, 2)
		images = append(images, f.sourceImage("web-01"))
		f.run()
	}
	ps := f.points("web-01")
	if len(ps) != 2 {
		t.Fatalf("%d points kept, want 2", len(ps))
	}
	same(t, "newest", f.pointImage("web-01", ps[1].ID, 2), images[3])
	same(t, "second newest", f.pointImage("web-01", ps[0].ID, 2), images[2])
	cps, _ := f.cat.RestorePoints("web", "web-01")
	if len(cps) != 2 || cps[0].ID != ps[0].ID {
		t.Fatalf("catalog does not agree with the target: %+v", cps)
	}
}

// A point retention drops that is gone by the time retention runs (an
// operator deleted it) is taken as gone: no warning, and the catalog
// lists what the target holds. So is one deleted while retention lists
// the points: the list and the deletes run at once.
func TestRetentionTakesAPointGoneMeanwhileAsGone(t *testing.T) {
	f := newFixture(t, "web-01")
	f.job.Retention.RestorePoints = 2
	for range 2 {
		f.write("web-01", 0, 2)
		f.runOK("web-01")
	}
	oldest := f.points("web-01")[0].ID
	f.eng.Hook = func(s Step, vm string) {
		if s == StepSnapshotGone {
			if err := f.comps.tgt.DeleteRestorePoint(context.Background(), vm+"_replica", oldest); err != nil {
				t.Errorf("delete %s behind the run's back: %v", oldest, err)
			}
		}
	}
	f.write("web-01", 0, 2)
	s := f.run()
	if s.Result != catalog.ResultSuccess || s.VMs[0].Error != "" {
		t.Fatalf("run with the dropped point gone: %s, %q", s.Result, s.VMs[0].Error)
	}
	ps := f.points("web-01")
	cps, _ := f.cat.RestorePoints("web", "web-01")
	if len(ps) != 2 || len(cps) != 2 || cps[0].ID != ps[0].ID || cps[1].ID != ps[1].ID {
		t.Fatalf("the target holds %+v, the catalog lists %+v", ps, cps)
	}
	for _, p := range ps {
		if p.ID == oldest {
			t.Fatalf("point %s is back", oldest)
		}
	}
}

func TestUnknownVMFailsAloneAndNamesItself(t *testing.T) {
	f := newFixture(t, "web-01")
	f.job.VMs = []string{"web-01", "ghost"}
	s := f.run()
	if s.Result != catalog.ResultWarning {
		t.Fatalf("session result %s", s.Result)
	}
	if s.VMs[0].Result != catalog.ResultSuccess || s.VMs[1].Result != catalog.ResultFailed {
		t.Fatalf("vm results %+v", s.VMs)
	}
	if msg := s.VMs[1].Error; !strings.Contains(msg, `vm "ghost"`) || !strings.Contains(msg, "not found") || !strings.Contains(msg, `job "web"`) {
		t.Fatalf("error %q does not name the job and VM", msg)
	}
}

func TestUnreachableRepositoryChangesNothing(t *testing.T) {
	f := newFixture(t, "web-01")
	f.comps.err = errors.New("open /mnt/gone: no such file or directory")
	_, err := f.eng.Run(context.Background(), f.job)
	if err == nil || !strings.Contains(err.Error(), "repository repository.mem.meta") {
		t.Fatalf("Run = %v", err)
	}
	if _, err := f.comps.tgt.GetReplica(context.Background(), "web-01_replica"); err == nil {
		t.Fatal("a replica was created although the run could not start")
	}
	sessions, _ := f.cat.Sessions("web", 1)
	if len(sessions) != 1 || sessions[0].Result != catalog.ResultFailed {
		t.Fatalf("sessions = %+v", sessions)
	}
}

func TestLeftoverSnapshotsAreRemoved(t *testing.T) {
	f := newFixture(t, "web-01")
	ctx := context.Background()
	// A killed run left a snapshot; someone else's snapshot stays.
	f.comps.src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: "web-01", Name: SnapshotPrefix("web") + "20260101T000000Z-dead"})
	f.comps.src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: "web-01", Name: "operator-before-upgrade"})
	f.run()
	snaps, _ := f.comps.src.ListSnapshots(ctx, "web-01")
	if len(snaps) != 1 || snaps[0].Name != "operator-before-upgrade" {
		t.Fatalf("snapshots after the run: %+v", snaps)
	}
}

func TestFailedOverReplicaIsNotOverwritten(t *testing.T) {
	f := newFixture(t, "web-01")
	f.run()
	ctx := context.Background()
	if _, err := f.comps.tgt.Failover(ctx, sdk.FailoverRequest{Replica: "web-01_replica"}); err != nil {
		t.Fatal(err)
	}
	s := f.run()
	// Skipped, said, and not a failure: a DR test must not turn every
	// scheduled run red.
	if s.VMs[0].Result != catalog.ResultSkipped || !strings.Contains(s.VMs[0].Error, "is failed over") ||
		s.Result != catalog.ResultSuccess || s.Totals().Skipped != 1 {
		t.Fatalf("run over a failed-over replica: session %s, %+v", s.Result, s.VMs[0])
	}
	if snaps, _ := f.comps.src.ListSnapshots(ctx, "web-01"); len(snaps) != 0 {
		t.Fatalf("a skipped VM was snapshotted: %+v", snaps)
	}
	if len(f.points("web-01")) != 1 {
		t.Fatal("a restore point was added to a failed-over replica")
	}
}

// countingSource measures how many snapshot disks are open at once.
type countingSource struct {
	*sdktest.MemSource
	mu         sync.Mutex
	open, most int
}

type countedReader struct {
	sdk.DiskReader
	s *countingSource
}

func (c countedReader) Close() error {
	c.s.mu.Lock()
	c.s.open--
	c.s.mu.Unlock()
	return c.DiskReader.Close()
}

func (c *countingSource) OpenSnapshotDisk(ctx context.Context, vm, snap string, disk int) (sdk.DiskReader, error) {
	r, err := c.MemSource.OpenSnapshotDisk(ctx, vm, snap, disk)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.open++
	c.most = max(c.most, c.open)
	c.mu.Unlock()
	time.Sleep(20 * time.Millisecond) // hold the slot long enough to overlap
	return countedReader{r, c}, nil
}

type countingComponents struct {
	*memComponents
	src *countingSource
}

func (c countingComponents) Source(context.Context, *config.PluginBlock) (sdk.Source, sdk.Capabilities, error) {
	return c.src, c.src.Capabilities(), nil
}

func TestDisksRespectTheTaskLimit(t *testing.T) {
	for _, limit := range []int{1, 2, 4} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			f := newFixture(t)
			src := &countingSource{MemSource: sdktest.NewMemSource(sdk.VM{Name: "wide", Disks: []sdk.Disk{{Capacity: 1 << 20}, {Capacity: 1 << 20}, {Capacity: 1 << 20}, {Capacity: 1 << 20}, {Capacity: 1 << 20}}})}
			f.eng.Components = countingComponents{memComponents: f.comps, src: src}
			f.job.VMs = []string{"wide"}
			f.job.Transfer.MaxTasks = limit
			if s := f.run(); s.Result != catalog.ResultSuccess || len(s.VMs[0].Disks) != 5 {
				t.Fatalf("session %s: %+v", s.Result, s.VMs)
			}
			if src.most > limit || (limit > 1 && src.most < 2) {
				t.Fatalf("%d disks moved at once with a limit of %d", src.most, limit)
			}
		})
	}
}

func TestHooksFollowTheCommitOrder(t *testing.T) {
	f := newFixture(t, "web-01")
	f.write("web-01", 0, 10)
	var mu sync.Mutex
	var steps []string
	f.eng.Hook = func(s Step, vm string) {
		mu.Lock()
		steps = append(steps, string(s))
		mu.Unlock()
	}
	f.run()
	got := strings.Join(steps, " ")
	// One "moving" per disk, in either order, then the fixed sequence.
	want := "snapshotted moving moving moved point-created cataloged snapshot-gone retention-done"
	if got != want {
		t.Fatalf("steps %q, want %q", got, want)
	}
}

// crashingRepository crashes the target the first time digests of a
// segment are stored: the moment between the data mover's writes and the
// writer's Close.
type crashingRepository struct {
	sdk.Repository
	tgt  *sdktest.MemTarget
	once sync.Once
}

func (r *crashingRepository) Put(ctx context.Context, key string, data []byte, ifGeneration int64) (int64, error) {
	if strings.Contains(key, "/seg/") || strings.Contains(key, "/delta/") {
		r.once.Do(r.tgt.Crash)
	}
	return r.Repository.Put(ctx, key, data, ifGeneration)
}

// Digests are stored only for data the target holds durably: a target that
// dies after the digests of a segment are stored must not leave digests of
// writes it lost, or a later digest run would skip those blocks.
func TestDigestsNeverOutliveLostWrites(t *testing.T) {
	f := newFixture(t, "db-01")
	f.write("db-01", 0, 30)
	f.run()
	f.write("db-01", 0, 5)
	f.comps.repo = &crashingRepository{Repository: f.comps.repo, tgt: f.comps.tgt}
	if s := f.run(); s.Result != catalog.ResultFailed || !strings.Contains(s.VMs[0].Error, "crash") {
		t.Fatalf("a run whose target crashed: %s %+v", s.Result, s.VMs)
	}
	f.comps.repo = f.comps.repo.(*crashingRepository).Repository
	f.comps.src.ResetChangeTracking("db-01", 0)
	want := f.sourceImage("db-01")
	s := f.run()
	if got := modes(s); got != "digest,change-tracking" {
		t.Fatalf("modes %s", got)
	}
	ps := f.points("db-01")
	same(t, "newest point after a target crash", f.pointImage("db-01", ps[len(ps)-1].ID, 2), want)
}

// TestReplicaNamedAfterTheVM: a job entry that is not the VM's name (its
// id here, an inventory path on vSphere) names the replica after the
// VM's own name; two entries naming one VM replicate it once, the second
// fails saying so.
func TestReplicaNamedAfterTheVM(t *testing.T) {
	f := newFixture(t)
	f.comps.src = sdktest.NewMemSource(sdk.VM{ID: "vm-17", Name: "app", Disks: []sdk.Disk{{Capacity: diskSize}}})
	f.job.VMs = []string{"vm-17", "app"}
	sess := f.run()
	if len(sess.VMs) != 2 || sess.VMs[0].Result != catalog.ResultSuccess || sess.VMs[1].Result != catalog.ResultFailed ||
		!strings.Contains(sess.VMs[1].Error, `names the same VM as "vm-17"`) {
		t.Fatalf("session: %+v", sess.VMs)
	}
	reps, err := f.comps.tgt.ListReplicas(context.Background())
	if err != nil || len(reps) != 1 || reps[0].Name != "app_replica" {
		t.Fatalf("replicas: %+v, %v", reps, err)
	}
	if len(f.points("app")) != 1 {
		t.Fatal("the replica has no restore point")
	}
}

// openCounting counts the disks a run holds open on each side and fails
// the opens it is told to.
type openCounting struct {
	mu               sync.Mutex
	readers, writers int
}

func (o *openCounting) add(n *int, d int) {
	o.mu.Lock()
	*n += d
	o.mu.Unlock()
}

type countingWriter struct {
	sdk.DiskWriter
	o *openCounting
}

func (w countingWriter) Close() error { w.o.add(&w.o.writers, -1); return w.DiskWriter.Close() }

type countingReader struct {
	sdk.DiskReader
	o *openCounting
}

func (r countingReader) Close() error { r.o.add(&r.o.readers, -1); return r.DiskReader.Close() }

type openSource struct {
	*sdktest.MemSource
	o    *openCounting
	fail error
}

func (s openSource) OpenSnapshotDisk(ctx context.Context, vm, snap string, disk int) (sdk.DiskReader, error) {
	if s.fail != nil {
		return nil, s.fail
	}
	r, err := s.MemSource.OpenSnapshotDisk(ctx, vm, snap, disk)
	if err != nil {
		return nil, err
	}
	s.o.add(&s.o.readers, 1)
	return countingReader{r, s.o}, nil
}

type openTarget struct {
	*sdktest.MemTarget
	o    *openCounting
	fail error
}

func (t openTarget) OpenReplicaDisk(ctx context.Context, replica string, disk int, size int64) (sdk.DiskWriter, error) {
	if t.fail != nil {
		return nil, t.fail
	}
	w, err := t.MemTarget.OpenReplicaDisk(ctx, replica, disk, size)
	if err != nil {
		return nil, err
	}
	t.o.add(&t.o.writers, 1)
	return countingWriter{w, t.o}, nil
}

type openComponents struct {
	*memComponents
	src openSource
	tgt openTarget
}

func (c openComponents) Source(context.Context, *config.PluginBlock) (sdk.Source, sdk.Capabilities, error) {
	return c.src, c.src.Capabilities(), nil
}

func (c openComponents) Target(context.Context, *config.PluginBlock) (sdk.Target, sdk.Capabilities, error) {
	return c.tgt, c.tgt.Capabilities(), nil
}

// failingGets is a repository whose reads fail.
type failingGets struct{ sdk.Repository }

func (failingGets) Get(context.Context, string) ([]byte, sdk.ObjectInfo, error) {
	return nil, sdk.ObjectInfo{}, errors.New("the repository is unreachable")
}

// A disk's replica disk, snapshot disk and metadata are opened at once:
// when one of them cannot be opened, the VM fails naming it and the run
// holds none of the others open.
func TestAFailedOpenClosesTheOtherDisks(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		set        func(f *fixture, c *openComponents)
	}{
		{"replica", "open the replica disk: the datastore is full", func(f *fixture, c *openComponents) { c.tgt.fail = errors.New("the datastore is full") }},
		{"snapshot", "open the snapshot disk: the snapshot is gone", func(f *fixture, c *openComponents) { c.src.fail = errors.New("the snapshot is gone") }},
		{"metadata", "replica metadata: read manifest", func(f *fixture, c *openComponents) { f.comps.repo = failingGets{f.comps.repo} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "web-01")
			o := &openCounting{}
			c := openComponents{memComponents: f.comps, src: openSource{MemSource: f.comps.src, o: o}, tgt: openTarget{MemTarget: f.comps.tgt, o: o}}
			tc.set(f, &c)
			f.eng.Components = c
			s, err := f.eng.Run(context.Background(), f.job)
			if err != nil {
				t.Fatal(err)
			}
			if s.VMs[0].Result != catalog.ResultFailed || !strings.Contains(s.VMs[0].Error, tc.want) {
				t.Fatalf("VM %s: %q, want a failure saying %q", s.VMs[0].Result, s.VMs[0].Error, tc.want)
			}
			if o.readers != 0 || o.writers != 0 {
				t.Fatalf("after the failed run %d snapshot disks and %d replica disks are still open", o.readers, o.writers)
			}
		})
	}
}
