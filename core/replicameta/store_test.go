package replicameta

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

const (
	bs      = 4096
	segBlks = 16
	segSize = bs * segBlks
)

// replicaOf is a replica working state of n segments, each filled with its
// index.
func replicaOf(n int) []byte {
	b := make([]byte, n*segSize)
	for i := range b {
		b[i] = byte(i / segSize)
	}
	return b
}

func digestsOf(t *testing.T, b []byte, seg int) []datamover.Digest {
	t.Helper()
	d, err := datamover.DigestRange(bytes.NewReader(b), int64(seg*segSize), int64((seg+1)*segSize), bs)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// bound is the replica the tests' metadata describes: session s1 made its
// newest restore point p1.
var bound = Binding{Replica: "r1", Incarnation: "i1", Point: "p1", PointSession: "s1"}

func open(t *testing.T, repo sdk.Repository, replica []byte, fresh bool, opened *int) *Store {
	t.Helper()
	return openAs(t, repo, replica, fresh, opened, "s1", bound)
}

func openAs(t *testing.T, repo sdk.Repository, replica []byte, fresh bool, opened *int, session string, b Binding) *Store {
	t.Helper()
	s, err := Open(context.Background(), repo, Prefix("web tier", "db/01", 0), Options{
		Session: session, Size: int64(len(replica)), BlockSize: bs, SegmentBlocks: segBlks, Fresh: fresh, Binding: b,
		Recompute: func(ctx context.Context) (io.ReaderAt, error) {
			*opened++
			return bytes.NewReader(replica), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreLifecycle(t *testing.T) {
	ctx := context.Background()
	repo := sdktest.NewMemRepository()
	replica := replicaOf(3)
	opened := 0

	s := open(t, repo, replica, true, &opened)
	for i := 0; i < 3; i++ {
		d, err := takeOne(ctx, s, i)
		if err != nil || d != nil {
			t.Fatalf("segment %d of a fresh replica = %v, %v; want unknown", i, d, err)
		}
		if err := putOne(ctx, s, i, digestsOf(t, replica, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Finish(ctx, int64(len(replica))); err != nil {
		t.Fatal(err)
	}
	if opened != 0 {
		t.Fatal("a fresh replica was read to recompute digests")
	}

	// The next run loads them, and marks each dirty in the manifest
	// before its blocks are written.
	s = open(t, repo, replica, false, &opened)
	if s.Known() != 3 {
		t.Fatalf("known segments = %d", s.Known())
	}
	d, err := takeOne(ctx, s, 1)
	if err != nil || len(d) != segBlks || d[0] != digestsOf(t, replica, 1)[0] {
		t.Fatalf("segment 1 = %d digests, %v", len(d), err)
	}
	if m := storedManifest(t, repo); fmt.Sprint(m.Dirty) != fmt.Sprint([]Range{{segSize, 2 * segSize}}) {
		t.Fatalf("dirty ranges of the stored manifest = %v, want segment 1", m.Dirty)
	}

	// Killed here: the next run recomputes segment 1 from the replica.
	replica[segSize+5] = 0xEE // the killed run had written a block
	s = open(t, repo, replica, false, &opened)
	d, err = takeOne(ctx, s, 1)
	if err != nil || opened != 1 {
		t.Fatalf("recompute: %v (replica opened %d times)", err, opened)
	}
	if want := digestsOf(t, replica, 1); d[0] != want[0] || d[1] != want[1] {
		t.Fatal("recomputed digests do not describe the replica as it is")
	}
	if st := s.Stats(); st.SegmentsRecomputed != 1 || st.BytesRecomputed != segSize {
		t.Fatalf("stats = %+v", st)
	}
}

func TestStaleSegmentsAreSwept(t *testing.T) {
	ctx := context.Background()
	repo := sdktest.NewMemRepository()
	replica := replicaOf(2)
	opened := 0
	s := open(t, repo, replica, true, &opened)
	takeOne(ctx, s, 0)
	putOne(ctx, s, 0, digestsOf(t, replica, 0))
	// A killed run wrote a segment object but never named it.
	orphan := Prefix("web tier", "db/01", 0) + "seg/1-deadbeef"
	repo.Put(ctx, orphan, []byte("junk"), sdk.IfAny)
	s = open(t, repo, replica, false, &opened)
	// Open deletes it in the background: Close waits for that.
	newObj := Prefix("web tier", "db/01", 0) + "seg/1-new"
	repo.Put(ctx, newObj, []byte("written by this run"), sdk.IfAbsent)
	s.Close()
	if _, _, err := repo.Get(ctx, orphan); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("orphan survived Open and Close: %v", err)
	}
	if _, _, err := repo.Get(ctx, newObj); err != nil {
		t.Fatalf("the sweep deleted an object written after Open: %v", err)
	}
	repo.Delete(ctx, newObj, sdk.IfAny)
	objs, _ := repo.List(ctx, Prefix("web tier", "db/01", 0)+"seg/")
	if len(objs) != 1 || s.Known() != 1 {
		t.Fatalf("segment objects = %v", objs)
	}
	// Replacing a segment deletes the object it replaces (by Close).
	takeOne(ctx, s, 0)
	replica[100] ^= 1
	putOne(ctx, s, 0, digestsOf(t, replica, 0))
	s.Close()
	objs, _ = repo.List(ctx, Prefix("web tier", "db/01", 0)+"seg/")
	if len(objs) != 1 {
		t.Fatalf("after a replace, segment objects = %v", objs)
	}
}

func TestDamagedOrForeignMetadataIsUnknown(t *testing.T) {
	ctx := context.Background()
	replica := replicaOf(1)
	prefix := Prefix("web tier", "db/01", 0)
	tests := []struct {
		name   string
		break_ func(repo sdk.Repository)
	}{
		{"damaged segment", func(repo sdk.Repository) {
			objs, _ := repo.List(ctx, prefix+"seg/")
			data, info, _ := repo.Get(ctx, objs[0].Key)
			data[10] ^= 1
			repo.Put(ctx, objs[0].Key, data, info.Generation)
		}},
		{"manifest of another block size", func(repo sdk.Repository) {
			data, info, _ := repo.Get(ctx, prefix+"manifest")
			repo.Put(ctx, prefix+"manifest", bytes.Replace(data, []byte(`"block_size":4096`), []byte(`"block_size":8192`), 1), info.Generation)
		}},
		{"garbage manifest", func(repo sdk.Repository) {
			_, info, _ := repo.Get(ctx, prefix+"manifest")
			repo.Put(ctx, prefix+"manifest", []byte("{not json"), info.Generation)
		}},
		{"lost manifest", func(repo sdk.Repository) {
			repo.Delete(ctx, prefix+"manifest", sdk.IfAny)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := sdktest.NewMemRepository()
			opened := 0
			s := open(t, repo, replica, true, &opened)
			takeOne(ctx, s, 0)
			putOne(ctx, s, 0, digestsOf(t, replica, 0))
			tt.break_(repo)
			s = open(t, repo, replica, false, &opened)
			d, err := takeOne(ctx, s, 0)
			if err != nil || opened != 1 || d[0] != digestsOf(t, replica, 0)[0] {
				t.Fatalf("Segment = %v (replica opened %d times); want digests recomputed from the replica", err, opened)
			}
		})
	}
}

// TestTakeWithoutWaiting: the manifest marks the blocks dirty before the
// call returns, their digests arrive afterwards, and damaged ones arrive
// as unknown without the replica being read (it is being written).
func TestTakeWithoutWaiting(t *testing.T) {
	ctx := context.Background()
	replica := replicaOf(3)
	repo := sdktest.NewMemRepository()
	opened := 0
	s := open(t, repo, replica, true, &opened)
	s.Take(ctx, []datamover.Take{whole(0), whole(1), whole(2)}, true)
	want := [][]datamover.Digest{digestsOf(t, replica, 0), digestsOf(t, replica, 1), digestsOf(t, replica, 2)}
	if err := s.Put(ctx, []datamover.Update{{Seg: 0, Digests: want[0]}, {Seg: 1, Digests: want[1]}, {Seg: 2, Digests: want[2]}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	prefix := Prefix("web tier", "db/01", 0)
	objs, _ := repo.List(ctx, prefix+"seg/2-")
	data, info, _ := repo.Get(ctx, objs[0].Key)
	data[20] ^= 1
	repo.Put(ctx, objs[0].Key, data, info.Generation)

	s = open(t, repo, replica, false, &opened)
	defer s.Close()
	got, err := s.Take(ctx, []datamover.Take{whole(0), whole(1), whole(2)}, false)
	if err != nil {
		t.Fatal(err)
	}
	if m := storedManifest(t, repo); fmt.Sprint(m.Dirty) != fmt.Sprint([]Range{{0, 3 * segSize}}) {
		t.Fatalf("the stored manifest's dirty ranges are %v, want all three segments", m.Dirty)
	}
	for i := range 2 {
		d, err := got[i].Wait(ctx)
		if err != nil || d == nil || d.Blocks() != segBlks {
			t.Fatalf("segment %d: %v, %v", i, d, err)
		}
		if v, ok := d.Digest(5); !ok || v != want[i][5] {
			t.Fatalf("segment %d: block 5 = %x (known %v)", i, v, ok)
		}
	}
	if d, err := got[2].Wait(ctx); d != nil || err != nil {
		t.Fatalf("damaged segment: %v, %v; want unknown", d, err)
	}
	if opened != 0 {
		t.Fatalf("the replica was read %d times to recompute digests", opened)
	}
	if st := s.Stats(); st.ObjectsLoaded != 2 || st.SegmentsRecomputed != 0 {
		t.Fatalf("stats %+v, want 2 loaded and none recomputed", st)
	}
}

func TestConcurrentWriterLoses(t *testing.T) {
	ctx := context.Background()
	repo := sdktest.NewMemRepository()
	replica := replicaOf(1)
	opened := 0
	a := open(t, repo, replica, true, &opened)
	b := open(t, repo, replica, true, &opened)
	if err := putOne(ctx, a, 0, digestsOf(t, replica, 0)); err != nil {
		t.Fatal(err)
	}
	err := putOne(ctx, b, 0, digestsOf(t, replica, 0))
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "manifest") {
		t.Fatalf("a second writer of the same disk's metadata = %v", err)
	}
}

func whole(seg int) datamover.Take {
	return datamover.Take{Seg: seg, Spans: []sdk.Extent{{Offset: int64(seg * segSize), Length: segSize}}}
}

// takeOne takes the digests of one whole segment, waiting for them.
func takeOne(ctx context.Context, s *Store, i int) ([]datamover.Digest, error) {
	ds, err := s.Take(ctx, []datamover.Take{whole(i)}, true)
	if err != nil || ds[0] == nil {
		return nil, err
	}
	if !ds[0].Ready() {
		return nil, errors.New("Take with wait returned digests still loading")
	}
	d, err := ds[0].Wait(ctx)
	if err != nil || d == nil {
		return nil, err
	}
	return every(d)
}

// every returns every digest of a segment, failing when one is unknown.
func every(d datamover.Stored) ([]datamover.Digest, error) {
	out := make([]datamover.Digest, d.Blocks())
	for i := range out {
		var ok bool
		if out[i], ok = d.Digest(i); !ok {
			return nil, fmt.Errorf("block %d unknown", i)
		}
	}
	return out, nil
}

// putOne puts the digests of one whole segment.
func putOne(ctx context.Context, s *Store, i int, d []datamover.Digest) error {
	return s.Put(ctx, []datamover.Update{{Seg: i, Digests: d}})
}

func storedManifest(t *testing.T, repo sdk.Repository) Manifest {
	t.Helper()
	return manifestAt(t, repo, Prefix("web tier", "db/01", 0))
}

func manifestAt(t *testing.T, repo sdk.Repository, prefix string) Manifest {
	t.Helper()
	data, _, err := repo.Get(context.Background(), prefix+"manifest")
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestManifestDistrust(t *testing.T) {
	finished := Manifest{Version: ManifestVersion, Size: 1 << 20, Replica: "r1", Incarnation: "i1", Session: "s1", Base: "p0", Finished: true}
	midRun := Manifest{Version: ManifestVersion, Size: 1 << 20, Replica: "r1", Incarnation: "i1", Session: "s2", Base: "p1"}
	for _, tc := range []struct {
		name  string
		m     Manifest
		b     Binding
		trust bool
	}{
		{"finished, its point is the newest", finished, bound, true},
		{"cut short mid-run from the newest point", midRun, bound, true},
		{"disk grew since", finished, Binding{Replica: "r1", Incarnation: "i1", Point: "p1", PointSession: "s1", Capacity: 2 << 20}, true},
		{"written by an older ferry", Manifest{Version: 1, Replica: "r1", Incarnation: "i1", Session: "s1", Finished: true}, bound, false},
		{"replica recreated under its name", finished, Binding{Replica: "r2", Incarnation: "i2", PointSession: ""}, false},
		{"replica replaced, same id", finished, Binding{Replica: "r1", Incarnation: "i9", Point: "p1", PointSession: "s1"}, false},
		{"metadata restored from an older copy", finished, Binding{Replica: "r1", Incarnation: "i1", Point: "p3", PointSession: "s3"}, false},
		{"metadata restored from an older copy, mid-run", midRun, Binding{Replica: "r1", Incarnation: "i1", Point: "p3", PointSession: "s3"}, false},
		{"killed between the metadata and the point", Manifest{Version: ManifestVersion, Replica: "r1", Incarnation: "i1", Session: "s2", Base: "p1", Finished: true}, bound, false},
		{"replica rolled back to an older point", finished, Binding{Replica: "r1", Incarnation: "i1", Point: "p0", PointSession: "s0"}, false},
		{"replica lost every point", finished, Binding{Replica: "r1", Incarnation: "i1"}, false},
		{"disk replaced by a smaller one", finished, Binding{Replica: "r1", Incarnation: "i1", Point: "p1", PointSession: "s1", Capacity: 4096}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why := tc.m.Distrust(tc.b)
			if (why == "") != tc.trust {
				t.Errorf("Distrust = %q, want trusted %v", why, tc.trust)
			}
		})
	}
}

// TestRolledBackMetadataIsRecomputed restores the repository to an older
// copy: the digests it holds describe restore point p1, the replica has
// moved on to p2. The store must recompute from the replica, so a block
// that went back to its p1 content at the source is still sent.
func TestRolledBackMetadataIsRecomputed(t *testing.T) {
	ctx := context.Background()
	repo := sdktest.NewMemRepository()
	replica := replicaOf(2)
	opened := 0
	s := openAs(t, repo, replica, true, &opened, "s1", Binding{Replica: "r1", Incarnation: "i1"})
	for i := range 2 {
		takeOne(ctx, s, i)
		putOne(ctx, s, i, digestsOf(t, replica, i))
	}
	s.Finish(ctx, int64(len(replica)))
	s.Close()
	objs, _ := repo.List(ctx, Prefix("web tier", "db/01", 0))
	backup := map[string][]byte{}
	for _, o := range objs {
		backup[o.Key], _, _ = repo.Get(ctx, o.Key)
	}

	// Session s2 changes segment 1 and makes p2.
	p1 := Binding{Replica: "r1", Incarnation: "i1", Point: "p1", PointSession: "s1"}
	s = openAs(t, repo, replica, false, &opened, "s2", p1)
	if s.Known() != 2 || s.Distrusted() != "" {
		t.Fatalf("s2: known %d, distrusted %q", s.Known(), s.Distrusted())
	}
	takeOne(ctx, s, 1)
	replica[segSize] = 0x77
	putOne(ctx, s, 1, digestsOf(t, replica, 1))
	s.Finish(ctx, int64(len(replica)))
	s.Close()

	// The repository goes back to its copy from before s2.
	objs, _ = repo.List(ctx, Prefix("web tier", "db/01", 0))
	for _, o := range objs {
		repo.Delete(ctx, o.Key, sdk.IfAny)
	}
	for k, v := range backup {
		repo.Put(ctx, k, v, sdk.IfAny)
	}

	p2 := Binding{Replica: "r1", Incarnation: "i1", Point: "p2", PointSession: "s2"}
	s = openAs(t, repo, replica, false, &opened, "s3", p2)
	defer s.Close()
	if s.Known() != 0 || !strings.Contains(s.Distrusted(), "older copy") {
		t.Fatalf("rolled-back metadata: known %d, distrusted %q; want none known and a reason", s.Known(), s.Distrusted())
	}
	d, err := takeOne(ctx, s, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := digestsOf(t, replica, 1); d[0] != want[0] {
		t.Fatal("segment 1's digests are the rolled-back ones, not the replica's")
	}
}

// damagedRepo answers Get of its damaged keys with ErrDataLoss, as a
// repository does for an object that fails its checks.
type damagedRepo struct {
	sdk.Repository
	mu      sync.Mutex
	damaged map[string]bool
}

func (r *damagedRepo) damage(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.damaged[key] = true
}

// mend forgets the damage of key when fix (a put or delete replaces it),
// and reports whether it was damaged.
func (r *damagedRepo) mend(key string, fix bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.damaged[key]
	if fix {
		delete(r.damaged, key)
	}
	return was
}

func (r *damagedRepo) Get(ctx context.Context, key string) ([]byte, sdk.ObjectInfo, error) {
	if r.mend(key, false) {
		return nil, sdk.ObjectInfo{}, fmt.Errorf("object %q: checksum mismatch: %w", key, errdefs.ErrDataLoss)
	}
	return r.Repository.Get(ctx, key)
}

func (r *damagedRepo) Put(ctx context.Context, key string, data []byte, gen int64) (int64, error) {
	r.mend(key, true)
	return r.Repository.Put(ctx, key, data, gen)
}

func (r *damagedRepo) Delete(ctx context.Context, key string, gen int64) error {
	r.mend(key, true)
	return r.Repository.Delete(ctx, key, gen)
}

func TestDamagedObjectsAreLostNotFatal(t *testing.T) {
	ctx := context.Background()
	repo := &damagedRepo{Repository: sdktest.NewMemRepository(), damaged: map[string]bool{}}
	replica := replicaOf(2)
	opened := 0
	s := open(t, repo, replica, true, &opened)
	for i := range 2 {
		takeOne(ctx, s, i)
		putOne(ctx, s, i, digestsOf(t, replica, i))
	}
	s.Finish(ctx, int64(len(replica)))
	s.Close()

	// A damaged segment: recomputed from the replica.
	s = open(t, repo, replica, false, &opened)
	seg0 := s.Manifest().Bases[0].Key
	s.Close()
	repo.damage(seg0)
	s = open(t, repo, replica, false, &opened)
	d, err := takeOne(ctx, s, 0)
	if err != nil || len(d) != segBlks || d[0] != digestsOf(t, replica, 0)[0] {
		t.Fatalf("damaged segment: %d digests, %v; want them recomputed", len(d), err)
	}
	s.Close()

	// A damaged manifest: removed, everything unknown, the run goes on.
	repo.damage(Prefix("web tier", "db/01", 0) + "manifest")
	s = open(t, repo, replica, false, &opened)
	defer s.Close()
	if s.Known() != 0 || !strings.Contains(s.Distrusted(), "damaged") {
		t.Fatalf("damaged manifest: known %d, distrusted %q", s.Known(), s.Distrusted())
	}
	if _, err := takeOne(ctx, s, 1); err != nil {
		t.Fatal(err)
	}
	if err := putOne(ctx, s, 1, digestsOf(t, replica, 1)); err != nil {
		t.Fatalf("write a new manifest over the damaged one: %v", err)
	}
}
