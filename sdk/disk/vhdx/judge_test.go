package vhdx

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// The independent judges: qemu-img (Debian qemu-utils) checks and compares
// the dynamic and fixed images we write and makes images for us to read;
// libvhdi's Python binding (Debian python3-libvhdi) reads our differencing
// chains, which qemu cannot. A test that needs one skips without it, except
// under CI, where a missing judge fails the test: CI installs them.

func needQemuImg(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("qemu-img")
	if err != nil {
		sdktest.MissingJudge(t, "qemu-img", "apt-get install qemu-utils")
	}
	return p
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuJudge has qemu-img check our image and compare it with raw.
func qemuJudge(t *testing.T, raw, img string) {
	t.Helper()
	q := needQemuImg(t)
	run(t, q, "check", "-f", "vhdx", img)
	run(t, q, "compare", "-f", "raw", "-F", "vhdx", raw, img)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func writeRaw(t testing.TB, dir string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, "raw.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// pattern is disk-like content: data, zero holes, a partial last block.
func pattern(size int64, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, size)
	for off := int64(0); off < size; off += 64 * kib {
		if r.IntN(3) == 0 {
			continue // a hole
		}
		chunk := b[off:min(off+64*kib, size)]
		for i := range chunk {
			chunk[i] = byte(r.Uint32())
		}
	}
	return b
}

func TestReadQemuImages(t *testing.T) {
	q := needQemuImg(t)
	dir := t.TempDir()
	data := pattern(9*mib+5*512, 1)
	raw := writeRaw(t, dir, data)
	cases := []struct{ name, format, opts string }{
		{"vhdx dynamic 1M", "vhdx", "subformat=dynamic,block_size=1M"},
		{"vhdx fixed 1M", "vhdx", "subformat=fixed,block_size=1M"},
		{"vhdx dynamic auto", "vhdx", "subformat=dynamic"},
		{"vhd dynamic", "vpc", "subformat=dynamic,force_size=on"},
		{"vhd fixed", "vpc", "subformat=fixed,force_size=on"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("q%d.img", i))
			run(t, q, "convert", "-f", "raw", "-O", tc.format, "-o", tc.opts, raw, path)
			img, err := Open(path, os.O_RDONLY)
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			want := data
			if img.Size() > int64(len(data)) { // VHD sizes may be rounded up
				want = append(bytes.Clone(data), make([]byte, img.Size()-int64(len(data)))...)
			}
			if got := readAll(t, img); !bytes.Equal(got, want) {
				t.Fatalf("content differs at byte %d", firstDiff(got, want))
			}
			ext, err := img.ChainExtents()
			if err != nil {
				t.Fatal(err)
			}
			// Outside the extents the disk must read zeros.
			pos := int64(0)
			for _, e := range append(ext, Extent{int64(len(want)), 0}) {
				if !allZero(want[pos:e.Offset]) {
					t.Fatalf("extents %v leave out data in [%d, %d)", ext, pos, e.Offset)
				}
				pos = e.End()
			}
		})
	}
}

// TestQemuWritesOurImage has qemu write into an image we made (qemu goes
// through its log for the BAT), then we read and write it again.
func TestQemuWritesOurImage(t *testing.T) {
	needQemuImg(t)
	if _, err := exec.LookPath("qemu-io"); err != nil {
		sdktest.MissingJudge(t, "qemu-io", "apt-get install qemu-utils")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "d.vhdx")
	img, err := Create(path, Options{Size: 4 * mib, BlockSize: mib})
	if err != nil {
		t.Fatal(err)
	}
	m := newModel(make([]byte, 4*mib), mib, 512, false)
	p := bytes.Repeat([]byte{0x11}, 3000)
	img.WriteAt(p, 100)
	m.write(p, 100)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-io", "-f", "vhdx", "-c", "write -P 0x5a 2M 64k", path)
	m.write(bytes.Repeat([]byte{0x5a}, 64*kib), 2*mib)
	img, err = Open(path, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, img, m)
	p = bytes.Repeat([]byte{0x77}, 5000)
	if _, err := img.WriteAt(p, 2*mib+60*kib); err != nil {
		t.Fatal(err)
	}
	m.write(p, 2*mib+60*kib)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuJudge(t, writeRaw(t, dir, m.data), path)
}
