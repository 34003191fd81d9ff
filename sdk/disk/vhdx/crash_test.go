package vhdx

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var errCrash = errors.New("simulated crash")

// snapshot copies the file at src as it is now: what a crash at this
// moment could leave on disk, with every write so far having reached it.
func snapshot(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCrashDuringSync stops a session at each step of Sync (and before
// it), takes the file as a crash would leave it, and checks that it opens,
// that every sector reads as before the session or after it, and that
// before the BAT is written no new block is visible.
func TestCrashDuringSync(t *testing.T) {
	steps := []string{"before sync", "data synced", "bitmaps synced", "BAT run written"}
	for _, diff := range []bool{false, true} {
		for si, step := range steps {
			if !diff && step == "bitmaps synced" {
				continue // a disk without a parent has no bitmaps
			}
			t.Run(fmt.Sprintf("differencing=%v/%s", diff, step), func(t *testing.T) {
				dir := t.TempDir()
				o := Options{Size: 32*mib + 512, BlockSize: mib}
				paths, models := buildChain(t, dir, o, map[bool]int{false: 0, true: 1}[diff], uint64(si+20))
				path, before := paths[0], models[0]
				img, err := Open(path, os.O_RDWR)
				if err != nil {
					t.Fatal(err)
				}
				extBefore, err := img.Extents()
				if err != nil {
					t.Fatal(err)
				}
				after := before.clone()
				r := rand.New(rand.NewPCG(uint64(si), 9))
				for range 30 {
					p, off := randomWrite(r, o.Size, mib)
					if _, err := img.WriteAt(p, off); err != nil {
						t.Fatal(err)
					}
					after.write(p, off)
				}
				crashed := filepath.Join(dir, "crashed.avhdx")
				if step == "before sync" {
					snapshot(t, path, crashed)
				} else {
					testHookFlush = func(s string) error {
						if s != step {
							return nil
						}
						snapshot(t, path, crashed)
						return errCrash
					}
					defer func() { testHookFlush = nil }()
					if err := img.Sync(); !errors.Is(err, errCrash) {
						t.Fatalf("Sync: %v, want the simulated crash", err)
					}
					if _, err := img.WriteAt([]byte{1}, 0); err == nil {
						t.Fatal("a write after a failed Sync succeeded")
					}
				}
				img.Close()

				got, err := Open(crashed, os.O_RDONLY)
				if err != nil {
					t.Fatalf("open after a crash at %q: %v", step, err)
				}
				defer got.Close()
				data := readAll(t, got)
				for s := int64(0); s < o.Size; s += 512 {
					g := data[s : s+512]
					if !bytes.Equal(g, before.data[s:s+512]) && !bytes.Equal(g, after.data[s:s+512]) {
						t.Fatalf("sector at %d reads neither the old nor the new content", s)
					}
				}
				ext, err := got.Extents()
				if err != nil {
					t.Fatal(err)
				}
				// What the file holds only grows, and never past what
				// was written; new blocks appear only with the BAT.
				if !covers(ext, extBefore) || !covers(after.extents(), ext) {
					t.Fatalf("extents after the crash %v are not between %v and %v", ext, extBefore, after.extents())
				}
				if step == "before sync" || step == "data synced" {
					if fmt.Sprint(ext) != fmt.Sprint(extBefore) {
						t.Fatalf("new data became visible before its bitmap or BAT entry was written:\n got %v\nwant %v", ext, extBefore)
					}
				}
				if !diff {
					qemuJudge(t, writeRaw(t, dir, data), crashed)
				}
			})
		}
	}
}

// flipByte corrupts one byte of the file at off.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptHeadersAndRegionTables(t *testing.T) {
	cases := []struct {
		name    string
		corrupt []int64
		want    string // "" opens; else an error naming this
	}{
		{"header 1", []int64{header1Offset + 100}, ""},
		{"header 2", []int64{header2Offset + 100}, ""},
		{"both headers", []int64{header1Offset + 100, header2Offset + 8}, "header 1 checksum"},
		{"region table 1", []int64{region1Offset + 40}, ""},
		{"both region tables", []int64{region1Offset + 40, region2Offset + 40}, "region table 2 checksum"},
		{"header signatures", []int64{header1Offset, header2Offset}, "header 2 signature"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d.vhdx")
			img, err := Create(path, Options{Size: 2 * mib, BlockSize: mib})
			if err != nil {
				t.Fatal(err)
			}
			want := bytes.Repeat([]byte("data"), 1000)
			img.WriteAt(want, 12345)
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			for _, off := range tc.corrupt {
				flipByte(t, path, off)
			}
			img, err = Open(path, os.O_RDONLY)
			if tc.want != "" {
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
					t.Fatalf("open: %v, want ErrCorrupt naming %q and the file", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			got := make([]byte, len(want))
			if _, err := img.ReadAt(got, 12345); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("read after corrupting %s: %v", tc.name, err)
			}
		})
	}
}

// TestNewerHeaderWins writes a session whose second header update is cut
// short: the headers then differ, and the one with the higher sequence
// number must be used.
func TestNewerHeaderWins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.vhdx")
	img, err := Create(path, Options{Size: 2 * mib, BlockSize: mib})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt([]byte("x"), 0)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	img, err = Open(path, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	v := img.l.(*vhdxFile)
	current, slot := v.hdr, v.slot
	img.Close()
	// Make the other slot an older header with another DataWriteGuid.
	older := current
	older.seq--
	older.dataWrite = newGUID()
	buf := make([]byte, headerSize)
	older.marshal(buf)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(buf, []int64{header1Offset, header2Offset}[1-slot])
	f.Close()
	img, err = Open(path, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if got := img.Info().DataWriteGUID; got != current.dataWrite {
		t.Fatalf("DataWriteGuid %s, want the newer header's %s", got, current.dataWrite)
	}
}

// covers reports whether every byte of inner lies in outer (both sorted
// and coalesced).
func covers(outer, inner []Extent) bool {
	for _, e := range inner {
		ok := false
		for _, o := range outer {
			if o.Offset <= e.Offset && e.End() <= o.End() {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
