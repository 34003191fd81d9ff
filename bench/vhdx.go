package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
)

// VHDXRun is the VHDX library (sdk/disk/vhdx, issue 14) against a plain
// file on the same bytes: the disk image written into a new dynamic VHDX
// and read back whole, beside the same writes into a raw file and reads of
// it. Both write every byte (zero chunks too) in 4 MiB calls and sync once
// at the end, and both are read with 4 MiB calls from the page cache (the
// better of two reads). The VHDX leaves chunks of zeros unallocated, as a
// replica's disk would, and reads them without touching the file.
type VHDXRun struct {
	Size      int64   `json:"disk_bytes"`
	WriteRaw  float64 `json:"write_raw_s"`
	WriteVHDX float64 `json:"write_vhdx_s"`
	ReadRaw   float64 `json:"read_raw_s"`
	ReadVHDX  float64 `json:"read_vhdx_s"`
	Error     string  `json:"error,omitempty"`
}

// VHDXShare is the least share of the raw file's throughput the VHDX
// library keeps, writing and reading.
const VHDXShare = 0.70

// vhdxChunk is the size of each write and read.
const vhdxChunk = 4 << 20

// runVHDX times the library against the raw file on the disk image, and
// checks that the VHDX reads back to the image's bytes.
func (b *bench) runVHDX(ctx context.Context) *VHDXRun {
	run := &VHDXRun{Size: b.size}
	if err := b.vhdx(ctx, run); err != nil {
		run.Error = err.Error()
	}
	return run
}

func (b *bench) vhdx(ctx context.Context, run *VHDXRun) error {
	dir := filepath.Join(b.scratch, "vhdx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src, err := os.Open(b.disk)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := b.cache(b.disk); err != nil {
		return err
	}
	raw, img := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.vhdx")
	b.logf("vhdx: writing the image into a raw file and a dynamic VHDX")
	if run.WriteRaw, err = timed(func() error { return copyInto(ctx, src, rawFile(raw, b.size)) }); err != nil {
		return fmt.Errorf("write the raw file: %w", err)
	}
	if run.WriteVHDX, err = timed(func() error { return copyInto(ctx, src, newVHDX(img, b.size)) }); err != nil {
		return fmt.Errorf("write the VHDX: %w", err)
	}
	want, err := hashFile(b.disk)
	if err != nil {
		return err
	}
	b.logf("vhdx: reading both back")
	// The better of two reads each: the first of a run pays for what the
	// process has not touched yet.
	for range 2 {
		t, err := timed(func() error { return readAll(ctx, raw, io.Discard) })
		if err != nil {
			return fmt.Errorf("read the raw file: %w", err)
		}
		run.ReadRaw = best(run.ReadRaw, t)
		if t, err = timed(func() error { return readAll(ctx, img, io.Discard) }); err != nil {
			return fmt.Errorf("read the VHDX: %w", err)
		}
		run.ReadVHDX = best(run.ReadVHDX, t)
	}
	// Checked apart from the timed reads, which hash nothing.
	h := xxh3.New()
	if err := readAll(ctx, img, h); err != nil {
		return fmt.Errorf("read the VHDX: %w", err)
	}
	if h.Sum128() != want {
		return errors.New("the VHDX does not read back to the image's bytes")
	}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		if out, err := exec.CommandContext(ctx, "qemu-img", "check", "-f", "vhdx", img).CombinedOutput(); err != nil {
			return fmt.Errorf("qemu-img check of the VHDX: %v: %s", err, out)
		}
	}
	return nil
}

// best is the smaller of two times, a zero one being none.
func best(a, b float64) float64 {
	if a == 0 {
		return b
	}
	return min(a, b)
}

func timed(fn func() error) (float64, error) {
	start := time.Now()
	err := fn()
	return time.Since(start).Seconds(), err
}

// writerAt is what a copy writes into: a raw file or a VHDX image.
type writerAt interface {
	io.WriterAt
	Sync() error
	Close() error
}

// rawFile and newVHDX open the two kinds of output; their errors surface
// at the first write.
func rawFile(path string, size int64) func() (writerAt, error) {
	return func() (writerAt, error) {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err == nil {
			err = f.Truncate(size)
		}
		return f, err
	}
}

func newVHDX(path string, size int64) func() (writerAt, error) {
	return func() (writerAt, error) {
		return vhdx.Create(path, vhdx.Options{Size: size})
	}
}

// copyInto writes src into what open makes, chunk by chunk, and syncs.
func copyInto(ctx context.Context, src *os.File, open func() (writerAt, error)) error {
	dst, err := open()
	if err != nil {
		return err
	}
	buf := make([]byte, vhdxChunk)
	for off := int64(0); ; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			dst.Close()
			return err
		}
		n, rerr := src.ReadAt(buf, off)
		if n > 0 {
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				dst.Close()
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			dst.Close()
			return rerr
		}
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// readAll reads a raw file or a VHDX (by its name) whole into w.
func readAll(ctx context.Context, path string, w io.Writer) error {
	var r interface {
		io.ReaderAt
		Size() int64
		Close() error
	}
	if strings.HasSuffix(path, ".vhdx") {
		img, err := vhdx.Open(path, os.O_RDONLY)
		if err != nil {
			return err
		}
		r = img
	} else {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		r = sizedFile{f, st.Size()}
	}
	defer r.Close()
	buf := make([]byte, vhdxChunk)
	for off := int64(0); off < r.Size(); off += vhdxChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.ReadAt(buf[:min(int64(len(buf)), r.Size()-off)], off)
		if err != nil && err != io.EOF {
			return err
		}
		w.Write(buf[:n])
	}
	return nil
}

type sizedFile struct {
	*os.File
	size int64
}

func (f sizedFile) Size() int64 { return f.size }

// vhdxGoals are the library's goals: at least VHDXShare of the raw file's
// throughput, writing and reading.
func vhdxGoals(v *VHDXRun) []Goal {
	names := [2]string{"VHDX library: write a dynamic VHDX vs a raw file", "VHDX library: read a dynamic VHDX vs a raw file"}
	want := fmt.Sprintf("≥ %.0f%% of its throughput", 100*VHDXShare)
	if v == nil {
		return []Goal{{Name: names[0], Want: want, Measured: "skipped (-vhdx=false)", Skipped: true},
			{Name: names[1], Want: want, Measured: "skipped (-vhdx=false)", Skipped: true}}
	}
	var goals []Goal
	for i, p := range [][2]float64{{v.WriteRaw, v.WriteVHDX}, {v.ReadRaw, v.ReadVHDX}} {
		if v.Error != "" || p[0] <= 0 || p[1] <= 0 {
			goals = append(goals, Goal{Name: names[i], Want: want, Measured: "not measured"})
			continue
		}
		share := p[0] / p[1] // the same bytes: throughput is inverse time
		goals = append(goals, Goal{Name: names[i], Want: want, Value: share, Limit: VHDXShare, Pass: share >= VHDXShare,
			Measured: fmt.Sprintf("%.0f%% (%s vs %s)", 100*share, fsecs(p[1]), fsecs(p[0]))})
	}
	return goals
}

// writeVHDX writes the VHDX run's figures.
func (r *Report) writeVHDX(b *strings.Builder) {
	v := r.VHDX
	if v == nil {
		return
	}
	fmt.Fprintf(b, "\nVHDX library (issue 14), %s image, 4 MiB calls, one sync:", FormatBytes(v.Size))
	if v.Error != "" {
		fmt.Fprintf(b, " failed: %s\n", v.Error)
		return
	}
	mbps := func(s float64) string { return fmt.Sprintf("%.0f MB/s", float64(v.Size)/s/1e6) }
	fmt.Fprintf(b, "\n  write: raw file %s (%s), dynamic VHDX %s (%s)\n", fsecs(v.WriteRaw), mbps(v.WriteRaw), fsecs(v.WriteVHDX), mbps(v.WriteVHDX))
	fmt.Fprintf(b, "  read:  raw file %s (%s), dynamic VHDX %s (%s), from the page cache\n", fsecs(v.ReadRaw), mbps(v.ReadRaw), fsecs(v.ReadVHDX), mbps(v.ReadVHDX))
}

func fsecs(s float64) string { return secs(time.Duration(s * float64(time.Second))) }
