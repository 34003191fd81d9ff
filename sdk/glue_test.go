package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/msgpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
	"github.com/ferry-dr/ferry/sdk/schema"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// These tests exercise the SDK's own glue over a real gRPC connection:
// what crosses the wire and how, not a component's behaviour (that is what
// the sdktest suites check).

const diskSize = 9<<20 + 12345 // past gRPC's 4 MiB default and unaligned

// diskData is disk-like: runs of zeros between patterned data.
func diskData() []byte {
	b := make([]byte, diskSize)
	for i := range b {
		if (i/(1<<20))%3 != 1 {
			b[i] = byte(i*7 + i/4096)
		}
	}
	return b
}

type memReader struct {
	*bytes.Reader
	path   string
	closed chan struct{}
}

func (m *memReader) Size() int64 { return m.Reader.Size() }

// Transport says how the glue source reads (sdk.TransportReporter).
func (m *memReader) Transport() (string, string) {
	return "memory", "the glue source keeps its disk in memory"
}
func (m *memReader) Close() error {
	close(m.closed)
	return nil
}

type pathReader struct{ *memReader }

func (p pathReader) LocalPath() string { return p.path }

type memWriter struct {
	mu     sync.Mutex
	data   []byte
	synced []byte // data as of the last Sync
	// noSnapshot keeps Sync from copying the disk (for benchmarks).
	noSnapshot bool
}

func (w *memWriter) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if off+int64(len(p)) > int64(len(w.data)) {
		return 0, fmt.Errorf("write past the end: %w", errdefs.ErrInvalidArgument)
	}
	return copy(w.data[off:], p), nil
}
func (w *memWriter) Size() int64  { return int64(len(w.data)) }
func (w *memWriter) Close() error { return nil }
func (w *memWriter) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.noSnapshot {
		w.synced = bytes.Clone(w.data)
	}
	return nil
}

// glueSource is a Source with a few deliberate behaviours.
type glueSource struct {
	*sdktest.MemSource
	data    []byte
	file    string
	writer  *memWriter
	started chan struct{}
}

func (g *glueSource) DescribeVM(ctx context.Context, vm string) (*sdk.VM, error) {
	switch vm {
	case "panic":
		panic("the plugin author forgot a nil check")
	case "block":
		close(g.started)
		<-ctx.Done()
		return nil, ctx.Err()
	case "web-01":
		return &sdk.VM{ID: "vm-1", Name: "web-01", CPUs: 2, MemoryMiB: 2048, Disks: []sdk.Disk{{Index: 0, Capacity: diskSize}},
			Folder: "/Prod/vm/web", Tags: []string{"backup/daily", "tier/gold"}}, nil
	}
	return nil, fmt.Errorf("vm %q: %w", vm, errdefs.ErrNotFound)
}

func (g *glueSource) ChangedAreas(ctx context.Context, req sdk.ChangedAreasRequest, fn func([]sdk.Extent) error) error {
	if req.ChangeID != "" {
		return fmt.Errorf("change id %q: %w", req.ChangeID, errdefs.ErrChangeIDReset)
	}
	// More extents than one batch message holds.
	batch := make([]sdk.Extent, 100000)
	for i := range batch {
		batch[i] = sdk.Extent{Offset: int64(i) * 8192, Length: 4096}
	}
	return fn(batch)
}

func (g *glueSource) OpenSnapshotDisk(ctx context.Context, vm, snap string, disk int) (sdk.DiskReader, error) {
	r := &memReader{Reader: bytes.NewReader(g.data), path: g.file, closed: make(chan struct{})}
	if vm == "direct" {
		return pathReader{r}, nil
	}
	return r, nil
}

func newGlue(t testing.TB) (*glueSource, *sdk.Client) {
	t.Helper()
	data := diskData()
	file := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	src := &glueSource{MemSource: sdktest.NewMemSource(sdk.VM{Name: "tagged", Tags: []string{"tier/gold", "dr/none"}}),
		data: data, file: file, started: make(chan struct{})}
	src.writer = &memWriter{data: make([]byte, diskSize)}
	cfgSchema := &schema.Block{Attributes: map[string]*schema.Attribute{
		"name":  {Type: cty.String, Required: true},
		"ports": {Type: cty.List(cty.Number)},
	}}
	p := &sdk.Plugin{
		Name:    "glue",
		Version: "0.0.1",
		Sources: map[string]sdk.Component[sdk.Source]{"glue": {
			Schema:       cfgSchema,
			Capabilities: sdk.Capabilities{ChangeTracking: true, DirectData: true, Folders: true},
			Validate: func(cfg cty.Value) schema.Diagnostics {
				var ds schema.Diagnostics
				if cfg.GetAttr("name").AsString() == "" {
					ds.Errorf(cty.GetAttrPath("name"), "Empty name", "name must not be empty")
				}
				return ds
			},
			New: func(ctx context.Context, cfg cty.Value) (sdk.Source, error) { return src, nil },
		}, "plain": {
			// A source that does not implement sdk.TagLister.
			Schema: cfgSchema,
			New:    func(ctx context.Context, cfg cty.Value) (sdk.Source, error) { return struct{ sdk.Source }{src}, nil },
		}},
		Targets: map[string]sdk.Component[sdk.Target]{"glue": {
			Schema:   cfgSchema,
			Limits:   sdk.Limits{MaxRestorePoints: 28, MaxRestorePointsReason: "the glue holds 32 layers"},
			Hardware: sdk.HyperVHardware(),
			New: func(ctx context.Context, cfg cty.Value) (sdk.Target, error) {
				return &glueTarget{w: src.writer}, nil
			},
		}},
		Repositories: map[string]sdk.Component[sdk.Repository]{"glue": {
			Schema: cfgSchema,
			New: func(ctx context.Context, cfg cty.Value) (sdk.Repository, error) {
				return &glueRepository{sdktest.NewMemRepository()}, nil
			},
		}},
	}
	target := sdktest.Serve(t, p)
	lastTarget = target
	return src, sdk.NewClient(sdktest.Dial(t, target), sdk.ClientOptions{Name: p.Name})
}

// lastTarget is the socket of the newest glue plugin, for raw calls.
var lastTarget string

type glueTarget struct {
	sdktest.MemTarget
	w *memWriter
}

func (g *glueTarget) OpenReplicaDisk(ctx context.Context, replica string, disk int, size int64) (sdk.DiskWriter, error) {
	return g.w, nil
}

// glueRepository is a Repository whose objects "damaged" and
// "damaged-status" are damaged: the first reports it with the class, the
// second with a bare gRPC status, as a plugin not written with this SDK
// would.
type glueRepository struct{ *sdktest.MemRepository }

func (g *glueRepository) Get(ctx context.Context, key string) ([]byte, sdk.ObjectInfo, error) {
	switch key {
	case "damaged":
		return nil, sdk.ObjectInfo{}, fmt.Errorf("object %q (file objects/damaged): checksum mismatch: %w", key, errdefs.ErrDataLoss)
	case "damaged-status":
		return nil, sdk.ObjectInfo{}, status.Errorf(codes.DataLoss, "object %q: torn header", key)
	}
	return g.MemRepository.Get(ctx, key)
}

var goodCfg = cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal("x"), "ports": cty.ListVal([]cty.Value{cty.NumberIntVal(443)})})

func configureSource(t testing.TB, c *sdk.Client) sdk.Source {
	t.Helper()
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	comp, _ := info.Component(sdk.KindSource, "glue")
	src, _, err := c.Source(context.Background(), "glue", comp.Schema, goodCfg)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestInfoCarriesSchemaAndCapabilities(t *testing.T) {
	_, c := newGlue(t)
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "glue" || info.ProtocolMajor != sdk.ProtocolMajor || len(info.Components) != 4 {
		t.Fatalf("info = %+v", info)
	}
	comp, ok := info.Component(sdk.KindSource, "glue")
	if !ok || !comp.Capabilities.ChangeTracking || !comp.Capabilities.DirectData || comp.Capabilities.ReIP ||
		!comp.Capabilities.Folders || comp.Capabilities.Tags || comp.Limits != (sdk.Limits{}) {
		t.Fatalf("source component = %+v", comp)
	}
	tgt, ok := info.Component(sdk.KindTarget, "glue")
	if !ok || tgt.Limits != (sdk.Limits{MaxRestorePoints: 28, MaxRestorePointsReason: "the glue holds 32 layers"}) {
		t.Fatalf("target component = %+v", tgt)
	}
	if !reflect.DeepEqual(tgt.Hardware, sdk.HyperVHardware()) {
		t.Fatalf("target hardware = %+v, want Hyper-V's", tgt.Hardware)
	}
	if comp.Hardware != nil {
		t.Fatalf("source hardware = %+v, want none declared", comp.Hardware)
	}
	if info.ProtocolMinor != sdk.ProtocolMinor {
		t.Fatalf("protocol minor %d, want %d", info.ProtocolMinor, sdk.ProtocolMinor)
	}
	if ty := comp.Schema.Attributes["ports"].Type; !ty.Equals(cty.List(cty.Number)) || !comp.Schema.Attributes["name"].Required {
		t.Fatalf("schema did not survive the wire: %#v", comp.Schema.Attributes)
	}
}

// TestFoldersAndTagsCrossTheWire: a VM's folder and tags survive, and
// ListTags reaches a source that lists tags and is ErrUnimplemented for
// one that does not.
func TestFoldersAndTagsCrossTheWire(t *testing.T) {
	_, c := newGlue(t)
	src := configureSource(t, c)
	vm, err := src.DescribeVM(context.Background(), "web-01")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Folder != "/Prod/vm/web" || strings.Join(vm.Tags, ",") != "backup/daily,tier/gold" {
		t.Fatalf("described as folder %q, tags %q", vm.Folder, vm.Tags)
	}
	tl, ok := src.(sdk.TagLister)
	if !ok {
		t.Fatalf("the host's source %T does not list tags", src)
	}
	tags, err := tl.ListTags(context.Background())
	if err != nil || strings.Join(tags, ",") != "dr/none,tier/gold" {
		t.Fatalf("ListTags = %q, %v", tags, err)
	}
	info, _ := c.Info(context.Background())
	comp, _ := info.Component(sdk.KindSource, "plain")
	plain, _, err := c.Source(context.Background(), "plain", comp.Schema, goodCfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = plain.(sdk.TagLister).ListTags(context.Background())
	if !errors.Is(err, errdefs.ErrUnimplemented) || !strings.Contains(err.Error(), `source "plain"`) {
		t.Fatalf("ListTags of a source without tags = %v, want ErrUnimplemented naming it", err)
	}
}

func TestValidateAndConfigureReportPaths(t *testing.T) {
	_, c := newGlue(t)
	info, _ := c.Info(context.Background())
	comp, _ := info.Component(sdk.KindSource, "glue")
	bad := cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal(""), "ports": cty.NullVal(cty.List(cty.Number))})
	diags, err := c.Validate(context.Background(), sdk.KindSource, "glue", comp.Schema, bad)
	if err != nil {
		t.Fatal(err)
	}
	if len(diags) != 1 || !diags[0].Path.Equals(cty.GetAttrPath("name")) || diags[0].Summary != "Empty name" {
		t.Fatalf("diagnostics = %+v", diags)
	}
	if _, diags, err := c.Source(context.Background(), "glue", comp.Schema, bad); err == nil || !diags.HasErrors() {
		t.Fatalf("configure with a bad value: %v, %v", diags, err)
	}
	if _, _, err := c.Source(context.Background(), "nope", comp.Schema, goodCfg); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("configure an unknown type: %v", err)
	}
}

func TestErrorClassesCrossTheWire(t *testing.T) {
	_, c := newGlue(t)
	src := configureSource(t, c)
	if _, err := src.DescribeVM(context.Background(), "missing"); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `vm "missing"`) {
		t.Fatalf("DescribeVM(missing) = %v", err)
	}
	err := src.ChangedAreas(context.Background(), sdk.ChangedAreasRequest{VM: "web-01", ChangeID: "7-1"}, func([]sdk.Extent) error { return nil })
	if !errors.Is(err, errdefs.ErrChangeIDReset) {
		t.Fatalf("ChangedAreas(stale id) = %v", err)
	}
}

// TestDataLossCrossesTheWire: a damaged object's class reaches the host,
// sent as a class or as the bare gRPC code, and travels as codes.DataLoss.
func TestDataLossCrossesTheWire(t *testing.T) {
	_, c := newGlue(t)
	ctx := context.Background()
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	comp, _ := info.Component(sdk.KindRepository, "glue")
	repo, _, err := c.Repository(ctx, "glue", comp.Schema, goodCfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"damaged", "damaged-status"} {
		_, _, err := repo.Get(ctx, key)
		if !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), fmt.Sprintf("object %q", key)) {
			t.Errorf("Get(%s) = %v, want a data loss naming the object", key, err)
		}
		if errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("Get(%s) = %v: a damaged object is not a missing one", key, err)
		}
	}

	conn := sdktest.Dial(t, lastTarget)
	cfg, err := msgpack.Marshal(goodCfg, goodCfg.Type())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewPluginClient(conn).Configure(ctx, &pb.ConfigureRequest{Instance: "raw", Kind: pb.Kind_REPOSITORY, Type: "glue", Config: &pb.DynamicValue{Msgpack: cfg}}); err != nil {
		t.Fatal(err)
	}
	stream, err := pb.NewRepositoryClient(conn).Get(metadata.AppendToOutgoingContext(ctx, "ferry-instance", "raw"), &pb.GetRequest{Key: "damaged"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.DataLoss {
		t.Fatalf("on the wire a data loss is %v, want code %v", err, codes.DataLoss)
	}
}

func TestChangedAreasSpansBatches(t *testing.T) {
	_, c := newGlue(t)
	src := configureSource(t, c)
	var n, calls int
	err := src.ChangedAreas(context.Background(), sdk.ChangedAreasRequest{VM: "web-01"}, func(b []sdk.Extent) error {
		calls++
		for _, e := range b {
			if e.Offset != int64(n)*8192 || e.Length != 4096 {
				return fmt.Errorf("extent %d = %+v", n, e)
			}
			n++
		}
		return nil
	})
	if err != nil || n != 100000 || calls < 2 {
		t.Fatalf("got %d extents in %d batches: %v", n, calls, err)
	}
}

func TestPanicBecomesAnErrorAndThePluginLives(t *testing.T) {
	_, c := newGlue(t)
	src := configureSource(t, c)
	_, err := src.DescribeVM(context.Background(), "panic")
	if err == nil || !strings.Contains(err.Error(), "forgot a nil check") {
		t.Fatalf("DescribeVM(panic) = %v", err)
	}
	if _, err := src.DescribeVM(context.Background(), "web-01"); err != nil {
		t.Fatalf("the plugin did not survive a panic: %v", err)
	}
}

func TestStreamLaneReadsExactly(t *testing.T) {
	g, c := newGlue(t)
	src := configureSource(t, c)
	r, err := src.OpenSnapshotDisk(context.Background(), "web-01", "s", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(sdk.LocalPather); ok {
		t.Fatal("a disk without a path came back on the direct lane")
	}
	if tr, ok := r.(sdk.TransportReporter); !ok {
		t.Fatal("the reader does not pass on the plugin's transport")
	} else if mode, why := tr.Transport(); mode != "memory" || why != "the glue source keeps its disk in memory" {
		t.Fatalf("Transport = %q, %q", mode, why)
	}
	if r.Size() != diskSize {
		t.Fatalf("Size = %d", r.Size())
	}
	got := make([]byte, diskSize)
	if n, err := r.ReadAt(got, 0); n != diskSize || err != nil {
		t.Fatalf("ReadAt whole disk = %d, %v", n, err)
	}
	if !bytes.Equal(got, g.data) {
		t.Fatal("whole-disk read differs")
	}
	tail := make([]byte, 100)
	n, err := r.ReadAt(tail, diskSize-40)
	if n != 40 || !errors.Is(err, io.EOF) || !bytes.Equal(tail[:40], g.data[diskSize-40:]) {
		t.Fatalf("read across the end = %d, %v", n, err)
	}
	if n, err := r.ReadAt(tail, diskSize); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read at the end = %d, %v", n, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err == nil {
		t.Fatal("a second Close succeeded")
	}
}

func TestDirectLane(t *testing.T) {
	g, c := newGlue(t)
	src := configureSource(t, c)
	r, err := src.OpenSnapshotDisk(context.Background(), "direct", "s", 0)
	if err != nil {
		t.Fatal(err)
	}
	lp, ok := r.(sdk.LocalPather)
	if !ok || lp.LocalPath() != g.file {
		t.Fatalf("reader %T is not on the direct lane", r)
	}
	got := make([]byte, 3<<20)
	if _, err := r.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, g.data[1<<20:4<<20]) {
		t.Fatalf("direct read differs: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// openGlueWriter opens replica disk 0 of the glue target over the stream
// lane.
func openGlueWriter(t testing.TB) (*glueSource, sdk.DiskWriter) {
	t.Helper()
	g, c := newGlue(t)
	info, _ := c.Info(context.Background())
	comp, _ := info.Component(sdk.KindTarget, "glue")
	tgt, _, err := c.Target(context.Background(), "glue", comp.Schema, goodCfg)
	if err != nil {
		t.Fatal(err)
	}
	w, err := tgt.OpenReplicaDisk(context.Background(), "r", 0, diskSize)
	if err != nil {
		t.Fatal(err)
	}
	return g, w
}

func TestStreamLaneWritesExactly(t *testing.T) {
	g, w := openGlueWriter(t)
	// Pre-fill the replica with garbage so zero runs must really be written.
	for i := range g.writer.data {
		g.writer.data[i] = 0xAA
	}
	want := diskData()
	var wg sync.WaitGroup
	for part := int64(0); part < 3; part++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lo, hi := part*diskSize/3, (part+1)*diskSize/3
			if n, err := w.WriteAt(want[lo:hi], lo); err != nil || n != int(hi-lo) {
				t.Errorf("WriteAt part %d = %d, %v", part, n, err)
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g.writer.data, want) {
		t.Fatal("the replica does not hold what was written")
	}
	if _, err := w.WriteAt([]byte("x"), diskSize); err == nil {
		t.Fatal("a write past the end on a closed disk succeeded")
	}
}

// Writes on the stream lane do not wait for the plugin one by one; Sync
// waits until the plugin applied every one of them and synced, and an
// error of the plugin reaches the caller at the latest at Sync.
func TestStreamLaneSyncCoversEveryWrite(t *testing.T) {
	g, w := openGlueWriter(t)
	defer w.Close()
	want := diskData()
	for off := int64(0); off < diskSize/2; off += 4096 {
		if _, err := w.WriteAt(want[off:off+4096], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g.writer.synced[:diskSize/2], want[:diskSize/2]) {
		t.Fatal("Sync returned before the plugin synced every write")
	}
	// The plugin refuses a write (its disk shrank under the handle).
	g.writer.mu.Lock()
	g.writer.data = g.writer.data[:diskSize/2]
	g.writer.mu.Unlock()
	w.WriteAt([]byte("beyond"), diskSize-16)
	err := w.Sync()
	if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "past the end") {
		t.Fatalf("Sync after a refused write = %v", err)
	}
	if _, err := w.WriteAt(want[:4096], 0); err == nil {
		t.Fatal("a write after a failed one succeeded")
	}
}

func TestCorruptChunkIsRejected(t *testing.T) {
	g, _ := newGlue(t)
	conn := sdktest.Dial(t, lastTarget)
	cfg, err := msgpack.Marshal(goodCfg, goodCfg.Type())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := pb.NewPluginClient(conn).Configure(ctx, &pb.ConfigureRequest{Instance: "raw", Kind: pb.Kind_TARGET, Type: "glue", Config: &pb.DynamicValue{Msgpack: cfg}}); err != nil {
		t.Fatal(err)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "ferry-instance", "raw")
	h, err := pb.NewTargetClient(conn).OpenReplicaDisk(ctx, &pb.OpenReplicaDiskRequest{Replica: "r", Size: diskSize})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := pb.NewDisksClient(conn).Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("payload that was damaged on the way")
	stream.Send(&pb.WriteMessage{Msg: &pb.WriteMessage_Handle{Handle: h.GetHandle()}})
	stream.Send(&pb.WriteMessage{Msg: &pb.WriteMessage_Chunk{Chunk: &pb.Chunk{Offset: 0, Data: data, Crc32C: crc32.ChecksumIEEE(data)}}})
	_, err = stream.CloseAndRecv()
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("a corrupt chunk was accepted: %v", err)
	}
	if bytes.Contains(g.writer.data, data) {
		t.Fatal("the corrupt chunk reached the disk")
	}
}

func TestCallWithoutInstanceIsRefused(t *testing.T) {
	newGlue(t)
	_, err := pb.NewSourceClient(sdktest.Dial(t, lastTarget)).ListVMs(context.Background(), &pb.Empty{})
	if err == nil || !strings.Contains(err.Error(), "ferry-instance") {
		t.Fatalf("ListVMs without an instance = %v", err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "ferry-instance", "nobody")
	_, err = pb.NewSourceClient(sdktest.Dial(t, lastTarget)).ListVMs(ctx, &pb.Empty{})
	if err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("ListVMs for an unknown instance = %v", err)
	}
}

func TestStopDrainsThenCancels(t *testing.T) {
	g, c := newGlue(t)
	src := configureSource(t, c)
	done := make(chan error, 1)
	go func() {
		_, err := src.DescribeVM(context.Background(), "block")
		done <- err
	}()
	<-g.started
	start := time.Now()
	if err := c.Stop(context.Background(), 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 5*time.Second {
		t.Fatalf("Stop returned after %s, want after the 200ms drain", d)
	}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the in-flight call ended with %v, want canceled", err)
	}
	if _, err := src.DescribeVM(context.Background(), "web-01"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a call after Stop = %v, want unavailable", err)
	}
}

// ProbeTransport answers "direct", except for the VMs "far" (unreachable
// from here) and "odd" (a mode the protocol does not know).
func (g *glueSource) ProbeTransport(ctx context.Context, vm string, disk int) (string, string, error) {
	switch vm {
	case "far":
		return "", "its datastore is not mounted here", nil
	case "odd":
		return "teleport", "", nil
	}
	return sdk.TransportDirect, fmt.Sprintf("disk %d is on this machine", disk), nil
}

// ProbeTransport crosses the wire, with the plugin's reasons; a source
// that does not probe answers ErrUnimplemented, and an unknown mode is an
// error, not a transport.
func TestProbeTransportCrossesTheWire(t *testing.T) {
	_, c := newGlue(t)
	p, ok := configureSource(t, c).(sdk.TransportProber)
	if !ok {
		t.Fatal("the host's source does not probe")
	}
	ctx := context.Background()
	if mode, why, err := p.ProbeTransport(ctx, "web-01", 1); mode != sdk.TransportDirect || why != "disk 1 is on this machine" || err != nil {
		t.Fatalf("probe = %q, %q, %v", mode, why, err)
	}
	if mode, why, err := p.ProbeTransport(ctx, "far", -1); mode != "" || why != "its datastore is not mounted here" || err != nil {
		t.Fatalf("probe of an unreachable VM = %q, %q, %v", mode, why, err)
	}
	if _, _, err := p.ProbeTransport(ctx, "odd", 0); err == nil || !strings.Contains(err.Error(), `unknown transport "teleport"`) {
		t.Fatalf("probe with an unknown mode = %v", err)
	}
	info, _ := c.Info(ctx)
	comp, _ := info.Component(sdk.KindSource, "plain")
	plain, _, err := c.Source(ctx, "plain", comp.Schema, goodCfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := plain.(sdk.TransportProber).ProbeTransport(ctx, "web-01", 0); !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Fatalf("probe of a source that cannot = %v, want ErrUnimplemented", err)
	}
}

// locatingRepository is a MemRepository that says where its objects lie:
// LocateObject writes the object into a file of its own after a few
// bytes of header, and counts the calls of each lane. With stale set it
// writes other bytes there, as a put racing the host's read would.
type locatingRepository struct {
	*sdktest.MemRepository
	dir           string
	stale         atomic.Bool
	gets, locates atomic.Int64
}

func (l *locatingRepository) Get(ctx context.Context, key string) ([]byte, sdk.ObjectInfo, error) {
	l.gets.Add(1)
	return l.MemRepository.Get(ctx, key)
}

func (l *locatingRepository) LocateObject(ctx context.Context, key string) (sdk.ObjectFile, error) {
	l.locates.Add(1)
	data, info, err := l.MemRepository.Get(ctx, key)
	if err != nil {
		return sdk.ObjectFile{}, err
	}
	sum := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	onDisk := data
	if l.stale.Load() {
		onDisk = bytes.Repeat([]byte{'x'}, len(data))
	}
	path := filepath.Join(l.dir, fmt.Sprintf("obj-%d", l.locates.Load()))
	if err := os.WriteFile(path, append([]byte("HEADER\n"), onDisk...), 0o600); err != nil {
		return sdk.ObjectFile{}, err
	}
	return sdk.ObjectFile{Info: info, Path: path, Offset: 7, CRC32C: sum}, nil
}

// locatingPlugin serves a locatingRepository; it returns the repository
// and a client of it (noDirect: without the direct lanes).
func locatingPlugin(t *testing.T, noDirect bool) (*locatingRepository, sdk.Repository) {
	t.Helper()
	lr := &locatingRepository{MemRepository: sdktest.NewMemRepository(), dir: t.TempDir()}
	p := &sdk.Plugin{Name: "locating", Version: "0.0.1", Repositories: map[string]sdk.Component[sdk.Repository]{"files": {
		Schema: &schema.Block{},
		New:    func(ctx context.Context, cfg cty.Value) (sdk.Repository, error) { return lr, nil },
	}}}
	c := sdk.NewClient(sdktest.Dial(t, sdktest.Serve(t, p)), sdk.ClientOptions{Name: p.Name, NoDirect: noDirect})
	repo, _, err := c.Repository(t.Context(), "files", &schema.Block{}, cty.EmptyObjectVal)
	if err != nil {
		t.Fatal(err)
	}
	return lr, repo
}

func TestObjectsDirectLane(t *testing.T) {
	ctx := t.Context()
	want := bytes.Repeat([]byte("digests "), 100000)
	t.Run("read from the file", func(t *testing.T) {
		lr, repo := locatingPlugin(t, false)
		gen, err := repo.Put(ctx, "k", want, sdk.IfAbsent)
		if err != nil {
			t.Fatal(err)
		}
		got, info, err := repo.Get(ctx, "k")
		if err != nil || !bytes.Equal(got, want) || info.Generation != gen || info.Size != int64(len(want)) {
			t.Fatalf("Get = %d bytes, %+v, %v; want the object put, generation %d", len(got), info, err, gen)
		}
		if lr.locates.Load() != 1 || lr.gets.Load() != 0 {
			t.Fatalf("%d locates and %d streamed gets, want the file alone", lr.locates.Load(), lr.gets.Load())
		}
		if _, _, err := repo.Get(ctx, "missing"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Get of a missing object = %v, want not found", err)
		}
	})
	t.Run("a file that changed is read again through the stream", func(t *testing.T) {
		lr, repo := locatingPlugin(t, false)
		if _, err := repo.Put(ctx, "k", want, sdk.IfAbsent); err != nil {
			t.Fatal(err)
		}
		lr.stale.Store(true)
		got, _, err := repo.Get(ctx, "k")
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get = %d bytes, %v; want the object itself", len(got), err)
		}
		if lr.locates.Load() != 1 || lr.gets.Load() != 1 {
			t.Fatalf("%d locates and %d streamed gets, want one of each", lr.locates.Load(), lr.gets.Load())
		}
	})
	t.Run("without the direct lanes", func(t *testing.T) {
		lr, repo := locatingPlugin(t, true)
		if _, err := repo.Put(ctx, "k", want, sdk.IfAbsent); err != nil {
			t.Fatal(err)
		}
		if got, _, err := repo.Get(ctx, "k"); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get = %d bytes, %v", len(got), err)
		}
		if lr.locates.Load() != 0 || lr.gets.Load() != 1 {
			t.Fatalf("%d locates and %d streamed gets, want the stream alone", lr.locates.Load(), lr.gets.Load())
		}
	})
}
