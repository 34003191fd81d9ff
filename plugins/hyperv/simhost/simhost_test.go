package simhost

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

const diskSize3 = 3 << 20

func newVM(t testing.TB, dir string) (*Host, *host.VM) {
	t.Helper()
	h, err := Open(dir, "LAN")
	if err != nil {
		t.Fatal(err)
	}
	v, err := h.CreateVM(context.Background(), host.VMSpec{Name: "vm", Generation: 2, CPUs: 1, MemoryMiB: 512,
		Disks: []host.DiskSpec{{Controller: "scsi", Capacity: diskSize3}}})
	if err != nil {
		t.Fatal(err)
	}
	return h, v
}

// span is a guest write; offsets and lengths are whole sectors, so change
// tracking must report exactly the written ranges.
type span struct {
	off  int64
	data []byte
}

func randomSpans(r *rand.Rand, n int) []span {
	var out []span
	for range n {
		length := int64(1+r.IntN(130)) * 512
		off := int64(r.IntN(int(diskSize3-length)/512)) * 512
		b := make([]byte, length)
		for i := range b {
			b[i] = byte(r.Uint32() | 1)
		}
		out = append(out, span{off, b})
	}
	return out
}

func write(t testing.TB, h *Host, vm string, model []byte, spans []span) {
	t.Helper()
	for _, s := range spans {
		if err := h.GuestWrite(context.Background(), vm, 0, s.off, s.data); err != nil {
			t.Fatal(err)
		}
		copy(model[s.off:], s.data)
	}
}

func extentsOf(spans ...[]span) []host.Extent {
	var e []host.Extent
	for _, ss := range spans {
		for _, s := range ss {
			e = append(e, host.Extent{Offset: s.off, Length: int64(len(s.data))})
		}
	}
	return coalesce(e)
}

func changes(t testing.TB, h *Host, vm, cp, since string) ([]host.Extent, error) {
	t.Helper()
	var got []host.Extent
	err := h.DiskChanges(context.Background(), vm, cp, 0, since, func(e []host.Extent) error {
		got = append(got, e...)
		return nil
	})
	return got, err
}

// TestRCTChangesEqualWrites: the changes since an id are exactly the
// ranges written since, before and after the checkpoints merge into
// reference points.
func TestRCTChangesEqualWrites(t *testing.T) {
	h, v := newVM(t, t.TempDir())
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	model := make([]byte, diskSize3)
	write(t, h, v.ID, model, randomSpans(r, 10))
	recovery := host.CheckpointRequest{Type: host.Recovery}
	cp1, err := h.CreateCheckpoint(ctx, v.ID, recovery)
	if err != nil {
		t.Fatal(err)
	}
	a := randomSpans(r, 12)
	write(t, h, v.ID, model, a)
	cp2, err := h.CreateCheckpoint(ctx, v.ID, recovery)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what, cp, since string, want []host.Extent) {
		t.Helper()
		got, err := changes(t, h, v.ID, cp, since)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: changes %v, want the writes %v", what, got, want)
		}
	}
	check("cp1 to cp2", cp2.ID, cp1.Disks[0].RCT, extentsOf(a))
	if _, err := h.ConvertToReferencePoint(ctx, v.ID, cp1.ID); err != nil {
		t.Fatal(err)
	}
	check("cp1 to cp2 after cp1 became a reference point", cp2.ID, cp1.Disks[0].RCT, extentsOf(a))
	b := randomSpans(r, 7)
	write(t, h, v.ID, model, b)
	cp3, err := h.CreateCheckpoint(ctx, v.ID, recovery)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ConvertToReferencePoint(ctx, v.ID, cp2.ID); err != nil {
		t.Fatal(err)
	}
	check("cp2 to cp3", cp3.ID, cp2.Disks[0].RCT, extentsOf(b))
	check("cp1 to cp3", cp3.ID, cp1.Disks[0].RCT, extentsOf(a, b))
	check("cp3 to itself", cp3.ID, cp3.Disks[0].RCT, nil)
	// The merges made cp3's file anew: ask the host where it is now.
	now, err := h.ListCheckpoints(ctx, v.ID)
	if err != nil || len(now) != 1 || now[0].ID != cp3.ID {
		t.Fatalf("checkpoints after two conversions: %v, %v", now, err)
	}
	if got := readChain(t, now[0].Disks[0].Path); !bytes.Equal(got, model) {
		t.Error("the checkpoint after two merges does not read what the guest wrote")
	}
	// The chain stays short: a merged base and the current file on it.
	s, err := h.readVM(v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.Files); n > 3 {
		t.Errorf("%d files after merging, want at most 3 (base, cp3's file, current)", n)
	}
}

// TestRCTInvalid: ids the host never gave, of another disk, or from before
// a reset are ErrChangeIDReset, so the source falls back to digests.
func TestRCTInvalid(t *testing.T) {
	h, v := newVM(t, t.TempDir())
	ctx := context.Background()
	cp1, err := h.CreateCheckpoint(ctx, v.ID, host.CheckpointRequest{Type: host.Recovery})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.ResetChangeTracking(ctx, v.ID, 0); err != nil {
		t.Fatal(err)
	}
	cp2, err := h.CreateCheckpoint(ctx, v.ID, host.CheckpointRequest{Type: host.Recovery})
	if err != nil {
		t.Fatal(err)
	}
	epoch := strings.Split(cp2.Disks[0].RCT, ":")[1]
	for _, id := range []string{"bogus", "", cp1.Disks[0].RCT, "rct:" + epoch + ":99", "rct:" + epoch + ":x"} {
		if _, err := changes(t, h, v.ID, cp2.ID, id); !errors.Is(err, errdefs.ErrChangeIDReset) {
			t.Errorf("changes since %q: %v, want ErrChangeIDReset", id, err)
		}
	}
}

func readChain(t testing.TB, path string) []byte {
	t.Helper()
	img, err := vhdx.Open(path, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

// chainFiles lists the files of the chain at path, top first.
func chainFiles(t testing.TB, path string) []string {
	t.Helper()
	img, err := vhdx.Open(path, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	var out []string
	for i := img; i != nil; i = i.Parent() {
		out = append(out, i.Path())
	}
	return out
}

// buildPoints makes four standard checkpoints with writes before each and
// after the last, and returns what each checkpoint and the current state
// hold.
func buildPoints(t testing.TB, h *Host, vm string, seed uint64) (cps []host.Checkpoint, want [][]byte, current []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 9))
	model := make([]byte, diskSize3)
	for range 4 {
		write(t, h, vm, model, randomSpans(r, 8))
		cp, err := h.CreateCheckpoint(context.Background(), vm, host.CheckpointRequest{Type: host.Standard})
		if err != nil {
			t.Fatal(err)
		}
		cps = append(cps, *cp)
		want = append(want, slices.Clone(model))
	}
	write(t, h, vm, model, randomSpans(r, 5))
	return cps, want, model
}

// checkPoints checks that each checkpoint still there reads what it held,
// with our reader and with libvhdi, and the current state too.
func checkPoints(t *testing.T, h *Host, vm string, ids []string, want [][]byte, current []byte) {
	t.Helper()
	cps, err := h.ListCheckpoints(context.Background(), vm)
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range cps {
		i := slices.Index(ids, cp.ID)
		if i < 0 {
			t.Fatalf("checkpoint %s appeared from nowhere", cp.ID)
		}
		if !bytes.Equal(readChain(t, cp.Disks[0].Path), want[i]) {
			t.Errorf("checkpoint %d reads other bytes", i+1)
		}
		if got, w := sdktest.LibvhdiDigest(t, chainFiles(t, cp.Disks[0].Path)...), sha(want[i]); got != w {
			t.Errorf("checkpoint %d: libvhdi reads sha256 %s, want %s", i+1, got, w)
		}
	}
	v, err := h.GetVM(context.Background(), vm)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readChain(t, v.Disks[0].Path), current) {
		t.Error("the current state reads other bytes")
	}
}

// strayFiles lists disk files the VM's state does not name.
func strayFiles(t testing.TB, h *Host, vm string) []string {
	t.Helper()
	s, err := h.readVM(vm)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(h.vmDir(vm))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if _, ok := s.Files[n]; !ok && (strings.HasSuffix(n, ".vhdx") || strings.HasSuffix(n, ".avhdx")) {
			out = append(out, n)
		}
	}
	return out
}

func TestDestroyCheckpointKeepsTheOthers(t *testing.T) {
	for _, gone := range []int{0, 1, 3} {
		t.Run([]string{"oldest", "second", "", "newest"}[gone], func(t *testing.T) {
			h, v := newVM(t, t.TempDir())
			cps, want, current := buildPoints(t, h, v.ID, uint64(gone))
			var ids []string
			for _, cp := range cps {
				ids = append(ids, cp.ID)
			}
			if err := h.DestroyCheckpoint(context.Background(), v.ID, cps[gone].ID); err != nil {
				t.Fatal(err)
			}
			checkPoints(t, h, v.ID, ids, want, current)
			if s := strayFiles(t, h, v.ID); len(s) > 0 {
				t.Errorf("files left behind: %v", s)
			}
			left, _ := h.ListCheckpoints(context.Background(), v.ID)
			if len(left) != 3 {
				t.Errorf("%d checkpoints left, want 3", len(left))
			}
		})
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestDestroyCheckpointsInTurn deletes the oldest checkpoint three times:
// each merge into the base keeps the others and the current state.
func TestDestroyCheckpointsInTurn(t *testing.T) {
	h, v := newVM(t, t.TempDir())
	cps, want, current := buildPoints(t, h, v.ID, 7)
	ids := []string{cps[0].ID, cps[1].ID, cps[2].ID, cps[3].ID}
	for i := range 3 {
		if err := h.DestroyCheckpoint(context.Background(), v.ID, cps[i].ID); err != nil {
			t.Fatal(err)
		}
		checkPoints(t, h, v.ID, ids, want, current)
	}
}
