package replicameta

import (
	"cmp"
	"fmt"
	"net/url"
	"slices"
)

// ManifestVersion is the version of the manifests this package writes.
// Version 1 manifests named no replica: they are never trusted. Version 2
// manifests (one whole object per segment, no deltas) are read and
// rewritten as version 3 by the next run.
const ManifestVersion = 3

// Manifest is the metadata of one replica disk.
type Manifest struct {
	Version       int   `json:"version"`
	Size          int64 `json:"size"`
	BlockSize     int   `json:"block_size"`
	SegmentBlocks int   `json:"segment_blocks"`
	// Segments is version 2's: segment index -> the object of its digests.
	Segments map[int]string `json:"segments,omitempty"`
	// Bases names, for every segment whose digests are known, the object
	// holding all of them as they were at its Seq.
	Bases map[int]BaseRef `json:"bases,omitempty"`
	// Deltas are objects holding the digests of blocks written since,
	// oldest first. A delta's digests of a segment count only when it is
	// newer than the segment's base.
	Deltas []DeltaRef `json:"deltas,omitempty"`
	// Seq numbers the writes of digest objects.
	Seq int64 `json:"seq,omitempty"`
	// Dirty are byte ranges of the disk being written, or left half
	// written by a run that stopped: whatever a base or delta says of
	// their blocks is unknown.
	Dirty []Range `json:"dirty,omitempty"`
	// Session is the session that wrote the manifest last.
	Session string `json:"session,omitempty"`
	// Replica and Incarnation name the replica the digests describe.
	Replica     string `json:"replica"`
	Incarnation string `json:"incarnation"`
	// Base is the restore point the replica's working state was at when
	// Session began ("" for a replica without points).
	Base string `json:"base"`
	// Finished says Session wrote every disk block it meant to: the
	// manifest then describes the restore point Session goes on to make.
	Finished bool `json:"finished"`
}

// BaseRef is the object holding every digest of one segment.
type BaseRef struct {
	Key string `json:"key"`
	Seq int64  `json:"seq"`
}

// DeltaRef is an object holding the digests of blocks one group of a run
// wrote; Blocks counts them by segment.
type DeltaRef struct {
	Key    string      `json:"key"`
	Seq    int64       `json:"seq"`
	Blocks map[int]int `json:"blocks"`
}

// Range is a half-open byte range [0] to [1] of the disk.
type Range [2]int64

// Binding is what the replica is now, as its target reports it: metadata
// is trusted only when it was written for this replica, this incarnation
// and this newest restore point.
type Binding struct {
	Replica     string
	Incarnation string
	// Point is the replica's newest restore point ("" for none) and
	// PointSession the session that made it (its ferry.session label).
	Point        string
	PointSession string
	// Capacity is the replica disk's size before this run (0: unknown).
	Capacity int64
}

// Distrust says why a manifest does not describe the replica it is read
// for; "" when it does.
func (m *Manifest) Distrust(b Binding) string {
	switch {
	case m.Version < 2:
		return fmt.Sprintf("written by an older ferry (version %d), it names no replica", m.Version)
	case m.Version > ManifestVersion:
		return fmt.Sprintf("written by a newer ferry (version %d; this one reads up to %d)", m.Version, ManifestVersion)
	case m.Replica != b.Replica || m.Incarnation != b.Incarnation:
		return fmt.Sprintf("written for replica %s (incarnation %s), not for %s (incarnation %s): the replica was deleted, replaced or recreated", m.Replica, m.Incarnation, b.Replica, b.Incarnation)
	case b.Capacity > 0 && m.Size > b.Capacity:
		return fmt.Sprintf("written for a disk of %d bytes, the replica's is %d: the disk was replaced", m.Size, b.Capacity)
	case m.Finished && (m.Session == "" || m.Session != b.PointSession):
		if b.Point == "" {
			return fmt.Sprintf("written by session %s, which made a restore point the replica does not have (it has none)", m.Session)
		}
		return fmt.Sprintf("written by session %s, but the newest restore point %s was made by session %s: the metadata or the replica was restored from an older copy, or a run was cut short before its restore point", m.Session, b.Point, b.PointSession)
	case !m.Finished && m.Base != b.Point:
		return fmt.Sprintf("written by session %s from restore point %q, but the replica's newest is %q: the metadata or the replica was restored from an older copy", m.Session, m.Base, b.Point)
	}
	return ""
}

// migrate turns a trusted version 2 manifest into a version 3 one: each
// segment's object becomes its base. Its binding fields were checked
// already, so nothing is read twice.
func (m *Manifest) migrate() {
	if m.Version != 2 {
		return
	}
	m.Bases = make(map[int]BaseRef, len(m.Segments))
	for i, k := range m.Segments {
		m.Bases[i] = BaseRef{Key: k}
	}
	m.Segments, m.Deltas, m.Dirty, m.Seq = nil, nil, nil, 0
	m.Version = ManifestVersion
}

// named lists every object the manifest names.
func (m *Manifest) named() map[string]bool {
	out := map[string]bool{}
	for _, b := range m.Bases {
		out[b.Key] = true
	}
	for _, d := range m.Deltas {
		out[d.Key] = true
	}
	return out
}

// pending counts the delta entries of segment seg newer than its base,
// and the deltas holding them.
func (m *Manifest) pending(seg int) (entries, deltas int) {
	base := m.Bases[seg].Seq
	for _, d := range m.Deltas {
		if n := d.Blocks[seg]; n > 0 && d.Seq > base {
			entries += n
			deltas++
		}
	}
	return entries, deltas
}

// dropObsolete removes the deltas no segment needs any more (each of
// their segments has a newer base, or none) and returns their keys.
func (m *Manifest) dropObsolete() []string {
	var gone []string
	m.Deltas = slices.DeleteFunc(m.Deltas, func(d DeltaRef) bool {
		for seg := range d.Blocks {
			if b, ok := m.Bases[seg]; ok && b.Seq < d.Seq {
				return false
			}
		}
		gone = append(gone, d.Key)
		return true
	})
	return gone
}

// Prefix is where the metadata of one replica disk lives.
func Prefix(job, vm string, disk int) string {
	return fmt.Sprintf("ferry/v1/%s/%s/disk-%d/", url.PathEscape(job), url.PathEscape(vm), disk)
}

// addRanges merges b into the sorted, merged ranges a.
func addRanges(a, b []Range) []Range {
	all := append(slices.Clone(a), b...)
	slices.SortFunc(all, func(x, y Range) int { return cmp.Compare(x[0], y[0]) })
	out := all[:0]
	for _, r := range all {
		if r[0] >= r[1] {
			continue
		}
		if n := len(out); n > 0 && r[0] <= out[n-1][1] {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

// removeRanges returns the parts of a not in b; both sorted and merged.
func removeRanges(a, b []Range) []Range {
	var out []Range
	j := 0
	for _, r := range a {
		cur := r[0]
		for j < len(b) && b[j][1] <= cur {
			j++
		}
		for k := j; k < len(b) && b[k][0] < r[1]; k++ {
			if b[k][0] > cur {
				out = append(out, Range{cur, b[k][0]})
			}
			cur = max(cur, b[k][1])
		}
		if cur < r[1] {
			out = append(out, Range{cur, r[1]})
		}
	}
	return out
}

// clipRanges returns the parts of a inside [lo, hi).
func clipRanges(a []Range, lo, hi int64) []Range {
	var out []Range
	for _, r := range a {
		if s, e := max(r[0], lo), min(r[1], hi); s < e {
			out = append(out, Range{s, e})
		}
	}
	return out
}
