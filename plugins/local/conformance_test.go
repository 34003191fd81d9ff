package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// The SDK's conformance suites, run on the plugin's components directly
// and through the plugin protocol (gRPC on a Unix socket).

func sourceFixture(t *testing.T) (sdktest.SourceFixture, string) {
	s := newSite(t.TempDir())
	if _, err := s.createVM(context.Background(), VMSpec{Name: "conform", Disks: []int64{4 << 20, 1<<20 + 8<<10}, CPUs: 2, MemoryMiB: 512,
		Folder: "/prod/web", Tags: []string{"tier/gold", "backup"}}); err != nil {
		t.Fatal(err)
	}
	// A second VM in the root folder, without tags.
	if _, err := s.createVM(context.Background(), VMSpec{Name: "plain", Disks: []int64{1 << 20}}); err != nil {
		t.Fatal(err)
	}
	write := func(t *testing.T, vm string, disk int, off int64, data []byte) {
		if err := s.trackedWrite(context.Background(), vm, disk, off, data); err != nil {
			t.Fatal(err)
		}
	}
	// An untracked change: bytes written with no tracked write knowing.
	reset := func(t *testing.T, vm string, disk int) {
		f, err := os.OpenFile(diskFile(s.root+"/"+vm, disk), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte("untracked"), 12345); err != nil {
			t.Fatal(err)
		}
	}
	return sdktest.SourceFixture{
		Capabilities:        Plugin().Sources["local"].Capabilities,
		VM:                  "conform",
		Folder:              "/prod/web",
		Tags:                []string{"backup", "tier/gold"},
		Write:               write,
		ResetChangeTracking: reset,
	}, s.root
}

func TestConformanceSource(t *testing.T) {
	fx, root := sourceFixture(t)
	src, err := NewSource(root)
	if err != nil {
		t.Fatal(err)
	}
	fx.New = func(*testing.T) sdk.Source { return src }
	sdktest.RunSource(t, fx)
}

func TestConformanceSourceOverWire(t *testing.T) {
	fx, root := sourceFixture(t)
	c := sdktest.Connect(t, Plugin())
	p := Plugin().Sources["local"]
	src, diags, err := c.Source(context.Background(), "local", p.Schema, pathValue(root))
	if err != nil || diags.HasErrors() {
		t.Fatal(err, diags.Err())
	}
	fx.New = func(*testing.T) sdk.Source { return src }
	sdktest.RunSource(t, fx)
}

func pathValue(p string) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{"path": cty.StringVal(p)})
}

// targetValue is a target's block as the host sends it: every attribute,
// null where the user wrote none.
func targetValue(p string) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{"path": cty.StringVal(p), "isolated_network": cty.NullVal(cty.String)})
}

func TestConformanceTarget(t *testing.T) {
	root := t.TempDir()
	cur, err := NewTarget(root)
	if err != nil {
		t.Fatal(err)
	}
	sdktest.RunTarget(t, sdktest.TargetFixture{
		New:             func(*testing.T) sdk.Target { return cur },
		Capabilities:    Plugin().Targets["local"].Capabilities,
		IsolatedNetwork: DefaultIsolatedNetwork,
		WriteTest:       writeTestDisk(root),
		MakeVM:          makePlainVM(root),
		WriteFailedOver: writeFailedOver(root),
		Crash: func(t *testing.T) {
			cur.crashForTest()
			if cur, err = NewTarget(root); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// TestConformanceTargetOverWire runs the suite through the protocol twice:
// with the direct lanes (replicas with points take prepared writes in
// the host's process) and with streams only (a host of an older protocol
// minor, or one that cannot open the files, writes every byte through
// the plugin).
func TestConformanceTargetOverWire(t *testing.T) {
	for _, noDirect := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "streams"}[noDirect], func(t *testing.T) {
			c := sdk.NewClient(sdktest.Dial(t, sdktest.Serve(t, Plugin())), sdk.ClientOptions{Name: "local", NoDirect: noDirect})
			p := Plugin().Targets["local"]
			root := t.TempDir()
			cfg := cty.ObjectVal(map[string]cty.Value{"path": cty.StringVal(root), "isolated_network": cty.StringVal("lab-bubble")})
			tgt, diags, err := c.Target(context.Background(), "local", p.Schema, cfg)
			if err != nil || diags.HasErrors() {
				t.Fatal(err, diags.Err())
			}
			w := openPointedWriter(t, tgt)
			_, prepared := w.(sdk.WritePreparer)
			w.Close()
			if prepared == noDirect {
				t.Fatalf("with NoDirect %v, the writer of a replica with points is %T", noDirect, w)
			}
			sdktest.RunTarget(t, sdktest.TargetFixture{
				New:             func(*testing.T) sdk.Target { return tgt },
				Capabilities:    p.Capabilities,
				IsolatedNetwork: "lab-bubble",
				WriteTest:       writeTestDisk(root),
				MakeVM:          makePlainVM(root),
				WriteFailedOver: writeFailedOver(root),
			})
		})
	}
}

// openPointedWriter opens a writer of a new replica that has a point.
func openPointedWriter(t *testing.T, tgt sdk.Target) sdk.DiskWriter {
	t.Helper()
	ctx := context.Background()
	if _, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "pointed", VM: testVM()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tgt.DeleteReplica(ctx, "pointed") })
	if _, err := tgt.CreateRestorePoint(ctx, "pointed", nil); err != nil {
		t.Fatal(err)
	}
	w, err := tgt.OpenReplicaDisk(ctx, "pointed", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestConformanceRepository(t *testing.T) {
	root := t.TempDir()
	repo, err := NewRepository(root)
	if err != nil {
		t.Fatal(err)
	}
	sdktest.RunRepository(t, sdktest.RepositoryFixture{New: func(*testing.T) sdk.Repository { return repo }, Damage: tearObject(root)})
}

// tearObject returns a RepositoryFixture.Damage that cuts an object's file
// in half, as a write the storage lost part of would.
func tearObject(root string) func(t *testing.T, key string) {
	return func(t *testing.T, key string) {
		path := filepath.Join(root, "objects", objectName(key))
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConformanceRepositoryOverWire(t *testing.T) {
	c := sdktest.Connect(t, Plugin())
	p := Plugin().Repositories["local"]
	root := t.TempDir()
	repo, diags, err := c.Repository(context.Background(), "local", p.Schema, pathValue(root))
	if err != nil || diags.HasErrors() {
		t.Fatal(err, diags.Err())
	}
	sdktest.RunRepository(t, sdktest.RepositoryFixture{New: func(*testing.T) sdk.Repository { return repo }, Damage: tearObject(root)})
}

func TestConformancePlugin(t *testing.T) {
	sdktest.RunPlugin(t, Plugin())
}

// TestPreparedWritesLandInOrder: through the host's prepared writer, a
// write to a prepared range that overlaps an earlier write still waiting
// in a batch lands after it, as it came.
func TestPreparedWritesLandInOrder(t *testing.T) {
	ctx := context.Background()
	c := sdk.NewClient(sdktest.Dial(t, sdktest.Serve(t, Plugin())), sdk.ClientOptions{Name: "local"})
	p := Plugin().Targets["local"]
	tgt, diags, err := c.Target(ctx, "local", p.Schema, targetValue(t.TempDir()))
	if err != nil || diags.HasErrors() {
		t.Fatal(err, diags.Err())
	}
	w := openPointedWriter(t, tgt)
	wp, ok := w.(sdk.WritePreparer)
	if !ok {
		t.Fatalf("the writer of a replica with points is %T", w)
	}
	if err := wp.PrepareWrites([]sdk.Extent{{Offset: 0, Length: 8 << 10}}); err != nil {
		t.Fatal(err)
	}
	first := bytes.Repeat([]byte{'a'}, 8<<10) // half prepared: gathered in a batch
	if _, err := w.WriteAt(first, 4<<10); err != nil {
		t.Fatal(err)
	}
	second := bytes.Repeat([]byte{'b'}, 4<<10) // prepared, over the first
	if _, err := w.WriteAt(second, 4<<10); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := tgt.OpenRestorePointDisk(ctx, "pointed", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make([]byte, 12<<10)
	if _, err := r.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := append(append(make([]byte, 4<<10), second...), first[4<<10:]...)
	if !bytes.Equal(got, want) {
		t.Fatalf("the working state holds %q... at 4 KiB, want the later write's %q", got[4<<10:4<<10+4], want[4<<10:4<<10+4])
	}
}

// writeTestDisk writes into a test VM's disk file as its guest would.
// makePlainVM makes a VM that is no replica in the target's folder, as
// `ferry-plugin-local vm create` does, with disks holding disks.
func makePlainVM(root string) func(t *testing.T, name string, disks [][]byte) {
	return func(t *testing.T, name string, disks [][]byte) {
		var sizes []int64
		for _, d := range disks {
			sizes = append(sizes, int64(len(d)))
		}
		if _, err := newSite(root).createVM(context.Background(), VMSpec{Name: name, Disks: sizes}); err != nil {
			t.Fatal(err)
		}
		for i, d := range disks {
			if err := os.WriteFile(diskFile(filepath.Join(root, name), i), d, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func writeTestDisk(root string) func(t *testing.T, id string, disk int, off int64, data []byte) {
	return func(t *testing.T, id string, disk int, off int64, data []byte) {
		f, err := os.OpenFile(diskFile(filepath.Join(root, testsDirName, id), disk), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
}

// writeFailedOver writes into a failed-over replica as its guest would:
// a tracked write of the VM folder the failover made.
func writeFailedOver(root string) func(t *testing.T, replica string, disk int, off int64, data []byte) {
	return func(t *testing.T, replica string, disk int, off int64, data []byte) {
		t.Helper()
		if err := newSite(root).trackedWrite(context.Background(), replica, disk, off, data); err != nil {
			t.Fatal(err)
		}
	}
}
