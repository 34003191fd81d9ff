package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"no error", nil, false},
		{"unclassified", errors.New("read /dev/sdb: input/output error"), true},
		{"unavailable", fmt.Errorf("vsphere vc1 cannot be reached: %w", errdefs.ErrUnavailable), true},
		{"unavailable over the wire", errdefs.WithClass("dial tcp 10.0.0.1:443: connection refused", errdefs.ErrUnavailable), true},
		{"plugin exited", fmt.Errorf("describe: %w", errdefs.ErrPluginExited), true},
		{"deadline exceeded", fmt.Errorf("open disk: %w", context.DeadlineExceeded), true},
		{"change id reset", fmt.Errorf("changed areas: %w", errdefs.ErrChangeIDReset), true},
		{"two retryable disks", errors.Join(fmt.Errorf("disk 0: %w", errdefs.ErrUnavailable), errors.New("disk 1: EOF")), true},
		{"not found", fmt.Errorf("vm %q: %w", "ghost", errdefs.ErrNotFound), false},
		{"not found over the wire", errdefs.WithClass("vm ghost: not found", errdefs.ErrNotFound), false},
		{"invalid argument", fmt.Errorf("names the same VM: %w", errdefs.ErrInvalidArgument), false},
		{"failed precondition", fmt.Errorf("replica is committed: %w", errdefs.ErrFailedPrecondition), false},
		{"already exists", fmt.Errorf("create replica: %w", errdefs.ErrAlreadyExists), false},
		{"permission denied", fmt.Errorf("login: %w", errdefs.ErrPermissionDenied), false},
		{"unimplemented", fmt.Errorf("quiesce: %w", errdefs.ErrUnimplemented), false},
		{"data loss", fmt.Errorf("header: %w", errdefs.ErrDataLoss), false},
		{"cancelled", fmt.Errorf("move: %w", context.Canceled), false},
		{"a permanent cause among retryable ones", errors.Join(fmt.Errorf("disk 0: %w", errdefs.ErrUnavailable), fmt.Errorf("disk 1: %w", errdefs.ErrPermissionDenied)), false},
		{"a permanent cause wrapped in an unavailable one", fmt.Errorf("%w: %w", errdefs.ErrUnavailable, errdefs.ErrInvalidArgument), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Retryable(tc.err); got != tc.want {
				t.Fatalf("Retryable(%v) = %t, want %t", tc.err, got, tc.want)
			}
		})
	}
}

// flakySource fails reads of a VM's disk 0 past its middle with err, for
// the first fails snapshot disks it opens (all when fails < 0): a
// connection lost in the middle of a copy.
type flakySource struct {
	*sdktest.MemSource
	vm    string
	fails int
	err   func(n int) error // the error of the nth failed disk, from 1
	mu    sync.Mutex
	n     int // failed disks so far
}

func (s *flakySource) OpenSnapshotDisk(ctx context.Context, vm, snap string, disk int) (sdk.DiskReader, error) {
	r, err := s.MemSource.OpenSnapshotDisk(ctx, vm, snap, disk)
	if err != nil || vm != s.vm || disk != 0 {
		return r, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fails >= 0 && s.n >= s.fails {
		return r, nil
	}
	s.n++
	return halfReader{r, s.err(s.n)}, nil
}

func (s *flakySource) failed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// halfReader reads the first half of a disk and fails beyond it.
type halfReader struct {
	sdk.DiskReader
	err error
}

func (h halfReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > h.Size()/2 {
		return 0, h.err
	}
	return h.DiskReader.ReadAt(p, off)
}

func unavailable(n int) error {
	return fmt.Errorf("read %d refused: %w", n, errdefs.ErrUnavailable)
}

// The engine's errors keep the class of their cause, through the VM and
// disk they name, so that Retryable can tell them apart.
func TestEngineErrorsKeepTheirClass(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(f *fixture)
		class error
	}{
		{"unknown VM", func(f *fixture) { f.job.VMs = []string{"ghost"} }, errdefs.ErrNotFound},
		{"source gone mid-copy", func(f *fixture) {
			f.write("web-01", 0, 10)
			f.comps.source = &flakySource{MemSource: f.comps.src, vm: "web-01", fails: 1, err: func(int) error {
				return errdefs.WithClass("plugin source local exited", errdefs.ErrPluginExited)
			}}
		}, errdefs.ErrPluginExited},
		{"listed twice", func(f *fixture) {
			f.comps.src = sdktest.NewMemSource(sdk.VM{ID: "vm-17", Name: "web-01", Disks: []sdk.Disk{{Capacity: diskSize}}})
			f.job.VMs = []string{"vm-17", "web-01"}
		}, errdefs.ErrInvalidArgument},
		{"committed replica", func(f *fixture) {
			// What `ferry failover commit` records.
			f.run()
			rec, err := f.cat.Replica("web", "web-01")
			if err != nil {
				t.Fatal(err)
			}
			rec.State = sdk.ReplicaCommitted
			if err := f.cat.PutReplica(rec); err != nil {
				t.Fatal(err)
			}
		}, errdefs.ErrFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "web-01")
			tc.setup(f)
			errs := map[string]error{}
			f.eng.Events = func(e Event) {
				if e.Kind == VMFinished {
					errs[e.VM] = e.Err
				}
			}
			s := f.run()
			var failed []string
			for _, vm := range s.VMs {
				if vm.Result == catalog.ResultFailed {
					failed = append(failed, vm.VM)
				}
			}
			if len(failed) != 1 {
				t.Fatalf("failed VMs %v, want one: %+v", failed, s.VMs)
			}
			err := errs[failed[0]]
			if !errors.Is(err, tc.class) || Retryable(err) != (tc.class == errdefs.ErrPluginExited) {
				t.Fatalf("error %v: class %q, want %v", err, errdefs.Class(err), tc.class)
			}
		})
	}
}
