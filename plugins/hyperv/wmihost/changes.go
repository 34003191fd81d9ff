package wmihost

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// changeRanges pairs GetVirtualDiskChanges' ChangedByteOffsets and
// ChangedByteLengths (uint64 arrays, which WMI hands over as strings).
func changeRanges(offsets, lengths any) ([]host.Extent, error) {
	offs, err := toInt64s(offsets)
	if err != nil {
		return nil, fmt.Errorf("ChangedByteOffsets: %w", err)
	}
	lens, err := toInt64s(lengths)
	if err != nil {
		return nil, fmt.Errorf("ChangedByteLengths: %w", err)
	}
	if len(offs) != len(lens) {
		return nil, fmt.Errorf("%d changed offsets but %d lengths: %w", len(offs), len(lens), errdefs.ErrDataLoss)
	}
	out := make([]host.Extent, 0, len(offs))
	for i := range offs {
		if offs[i] < 0 || lens[i] < 0 {
			return nil, fmt.Errorf("changed range %d, +%d: %w", offs[i], lens[i], errdefs.ErrDataLoss)
		}
		if lens[i] > 0 {
			out = append(out, host.Extent{Offset: offs[i], Length: lens[i]})
		}
	}
	return out, nil
}

// changeQuery asks change tracking for the changes in [off, off+n): the
// ranges changed there, and how much of it was processed (perhaps less
// than n).
type changeQuery func(ctx context.Context, off, n int64) (processed int64, changed []host.Extent, err error)

// walkChanges asks q for the changes of a disk of size bytes, from the
// start to the end, and calls emit with each answer's ranges, sorted,
// merged and clipped to the part asked. An answer that processed nothing
// or more than asked is an error rather than a loop or a skipped range.
func walkChanges(ctx context.Context, size int64, q changeQuery, emit func([]host.Extent) error) error {
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := size - off
		processed, changed, err := q(ctx, off, n)
		if err != nil {
			return err
		}
		if processed <= 0 || processed > n {
			return fmt.Errorf("change tracking processed %d bytes of %d asked at %d: %w", processed, n, off, errdefs.ErrDataLoss)
		}
		batch := clip(changed, off, off+processed)
		if len(batch) > 0 {
			if err := emit(batch); err != nil {
				return err
			}
		}
		off += processed
	}
	return nil
}

// clip sorts and merges ranges and keeps their parts within [from, to).
func clip(e []host.Extent, from, to int64) []host.Extent {
	sort.Slice(e, func(i, j int) bool { return e[i].Offset < e[j].Offset })
	var out []host.Extent
	for _, x := range e {
		s, t := max(x.Offset, from), min(x.Offset+x.Length, to)
		if t <= s {
			continue
		}
		if n := len(out); n > 0 && s <= out[n-1].Offset+out[n-1].Length {
			out[n-1].Length = max(out[n-1].Offset+out[n-1].Length, t) - out[n-1].Offset
			continue
		}
		out = append(out, host.Extent{Offset: s, Length: t - s})
	}
	return out
}

// changesError decides what a failed change query means to the plugin.
// Hyper-V refuses an id it no longer vouches for (reset tracking, a disk
// replaced, ERROR_VHD_MISSING_CHANGE_TRACKING_INFORMATION) with errors
// that are not told apart reliably through WMI, so every refusal is
// errdefs.ErrChangeIDReset and ferry compares digests: slower, never
// wrong. Only a cancelled call, or a host that did not answer at all,
// stays what it is, so the engine retries instead of reading everything.
func changesError(disk int, since string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errdefs.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("disk %d: change tracking id %q: %v: %w", disk, since, err, errdefs.ErrChangeIDReset)
}
