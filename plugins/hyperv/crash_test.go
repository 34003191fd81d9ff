package hyperv

import (
	"fmt"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// crashForTest makes the target as good as dead: its open writers are
// abandoned without closing their images, as when the process dies (the
// block tables they did not sync are lost).
func (t *Target) crashForTest() { writers.dropOwned(t) }

// drop abandons the writer without closing its image, as a process that
// dies does (tests only: the image's unsynced block table is lost).
func (w *diskWriter) drop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	w.doneErr = fmt.Errorf("replica disk writer of a crashed target: %w", errdefs.ErrFailedPrecondition)
}

// dropOwned abandons the writers of one target (tests: a crash).
func (s *writerSet) dropOwned(t *Target) {
	s.mu.Lock()
	var ws []*diskWriter
	for k, w := range s.m {
		if w.owner == t {
			ws = append(ws, w)
			delete(s.m, k)
		}
	}
	s.mu.Unlock()
	for _, w := range ws {
		w.drop()
	}
}
