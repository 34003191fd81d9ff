package local

import (
	"context"
	"fmt"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Source serves a site folder as an sdk.Source. Snapshots are
// redirect-on-write delta layers; change tracking is the per-disk change
// log that `ferry-plugin-local vm write` feeds.
type Source struct {
	site *site
}

var (
	_ sdk.Source    = (*Source)(nil)
	_ sdk.TagLister = (*Source)(nil)
)

// NewSource opens the site folder root, which must exist.
func NewSource(root string) (*Source, error) {
	if err := checkFolder(root, false); err != nil {
		return nil, fmt.Errorf("open site: %w", err)
	}
	return &Source{site: newSite(root)}, nil
}

func canceled(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrCanceled, err)
	}
	return nil
}

func (s *Source) ListVMs(ctx context.Context) ([]sdk.VM, error) {
	if err := canceled(ctx); err != nil {
		return nil, err
	}
	return s.site.listVMs()
}

// ListTags implements sdk.TagLister: the tags the site's VMs carry.
func (s *Source) ListTags(ctx context.Context) ([]string, error) {
	if err := canceled(ctx); err != nil {
		return nil, err
	}
	return s.site.listTags()
}

func (s *Source) DescribeVM(ctx context.Context, vm string) (*sdk.VM, error) {
	if err := canceled(ctx); err != nil {
		return nil, err
	}
	return s.site.describe(vm)
}

func (s *Source) CreateSnapshot(ctx context.Context, req sdk.SnapshotRequest) (*sdk.Snapshot, error) {
	return s.site.createSnapshot(ctx, req)
}

func (s *Source) RemoveSnapshot(ctx context.Context, vm, snapshot string) error {
	return s.site.removeSnapshot(ctx, vm, snapshot)
}

func (s *Source) ListSnapshots(ctx context.Context, vm string) ([]sdk.Snapshot, error) {
	if err := canceled(ctx); err != nil {
		return nil, err
	}
	return s.site.listSnapshots(vm)
}

func (s *Source) ChangedAreas(ctx context.Context, req sdk.ChangedAreasRequest, fn func([]sdk.Extent) error) error {
	return s.site.changedAreas(ctx, req, fn)
}

func (s *Source) OpenSnapshotDisk(ctx context.Context, vm, snapshot string, disk int) (sdk.DiskReader, error) {
	return s.site.openSnapshotDisk(ctx, vm, snapshot, disk)
}
