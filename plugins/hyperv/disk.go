package hyperv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// diskReader reads a chain of VHDX files as one disk of size bytes (a
// replica's disk may be smaller than its VHDX, which is whole sectors).
type diskReader struct {
	img  *vhdx.Image
	size int64
}

var (
	_ sdk.DiskReader        = (*diskReader)(nil)
	_ sdk.TransportReporter = (*diskReader)(nil)
)

func openReader(path string, size int64) (*diskReader, error) {
	img, err := vhdx.Open(path, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	return &diskReader{img: img, size: min(size, img.Size())}, nil
}

func (r *diskReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, errdefs.ErrInvalidArgument)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.size-off)
	if _, err := r.img.ReadAt(p[:n], off); err != nil && err != io.EOF {
		return 0, err
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

func (r *diskReader) Size() int64  { return r.size }
func (r *diskReader) Close() error { return r.img.Close() }

func (r *diskReader) Transport() (string, string) {
	return sdk.TransportDirect, "the VHDX chain is read from the host's storage by ferry's VHDX reader"
}

// diskWriter writes the newest file of a replica disk's chain. Only one
// writer of a disk is open at a time (writerSet): a new one, a restore
// point or a failover supersedes it, closing its image first so that its
// writes land before anything that follows, and refusing its later ones.
type diskWriter struct {
	key   string
	owner any // the Target or Source that opened it (tests abandon a crashed one's)
	size  int64

	mu      sync.RWMutex // WriteAt and Sync hold it shared; supersede and Close exclusive
	img     *vhdx.Image
	done    bool  // closed or superseded
	doneErr error // why later writes are refused
}

var _ sdk.DiskWriter = (*diskWriter)(nil)

func (w *diskWriter) WriteAt(p []byte, off int64) (int, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.done {
		return 0, w.doneErr
	}
	if off < 0 || int64(len(p)) > w.size-off {
		return 0, fmt.Errorf("write [%d, +%d) past the end of the disk (%d bytes): %w", off, len(p), w.size, errdefs.ErrInvalidArgument)
	}
	return w.img.WriteAt(p, off)
}

func (w *diskWriter) Size() int64 { return w.size }

func (w *diskWriter) Sync() error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.done {
		return w.doneErr
	}
	return w.img.Sync()
}

// Close syncs and closes the image. A superseded writer's image was
// closed when it was superseded.
func (w *diskWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil
	}
	w.done = true
	w.doneErr = fmt.Errorf("replica disk writer is closed: %w", errdefs.ErrFailedPrecondition)
	writers.forget(w)
	return w.img.Close()
}

// supersede closes the writer's image (its writes become durable before
// anything that follows) and refuses its later writes.
func (w *diskWriter) supersede(why string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil
	}
	w.done = true
	w.doneErr = fmt.Errorf("replica disk writer superseded by %s: %w", why, errdefs.ErrFailedPrecondition)
	return w.img.Close()
}

// writerSet holds the open writers of every target of the process, by
// host, VM and disk: two targets on one host (a proxy's and the control
// plane's) must not both hold a disk's image open for writing.
type writerSet struct {
	mu sync.Mutex
	m  map[string]*diskWriter
}

var writers = &writerSet{m: map[string]*diskWriter{}}

func writerKey(hostName, vm string, disk int) string {
	return fmt.Sprintf("%s\x00%s\x00%d", hostName, vm, disk)
}

// supersede closes the writers whose keys start with prefix.
func (s *writerSet) supersede(prefix, why string) error {
	s.mu.Lock()
	var ws []*diskWriter
	for k, w := range s.m {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			ws = append(ws, w)
			delete(s.m, k)
		}
	}
	s.mu.Unlock()
	var errs []error
	for _, w := range ws {
		errs = append(errs, w.supersede(why))
	}
	return errors.Join(errs...)
}

func (s *writerSet) add(w *diskWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[w.key] = w
}

func (s *writerSet) forget(w *diskWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[w.key] == w {
		delete(s.m, w.key)
	}
}
