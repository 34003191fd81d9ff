package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/core/plan"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Replica seeding moves a job's first full copy by removable storage or a
// folder instead of the WAN: SeedExport writes each VM's disks and
// description into a folder at the production site, SeedImport makes each
// VM's replica on the job's target from that folder at the DR site. The
// job's first run then finds the replica without restore points and
// compares every block of it with the source (its digests computed where
// it lives), so only what changed since the export crosses the WAN.
//
// A seed folder holds seed.json (SeedManifest), written last: a folder
// without it is an export that did not finish. Each VM's disks are sparse
// images vm<N>/disk<I>.img. Every disk carries a fingerprint, the SHA-256
// of its block digests (datamover.Digest, 4 KiB blocks) segment by
// segment: the export takes it from what it read of the source and checks
// the image against it; the import checks the image before writing the
// replica and the replica after.

// SeedFile is the seed folder's manifest.
const SeedFile = "seed.json"

// SeedManifest describes a seed folder.
type SeedManifest struct {
	Version int       `json:"version"`
	Job     string    `json:"job"`
	Created time.Time `json:"created"`
	VMs     []SeedVM  `json:"vms"`
	Source  string    `json:"source"` // the job's source block, as source.TYPE.NAME
	Block   int       `json:"block_size"`
}

// SeedVM is one VM of a seed.
type SeedVM struct {
	Entry    string     `json:"entry"` // the job's key for the VM
	VM       sdk.VM     `json:"vm"`    // as the source described it
	Snapshot time.Time  `json:"snapshot"`
	Quiesced bool       `json:"quiesced"`
	Disks    []SeedDisk `json:"disks"`
}

// SeedDisk is one disk image of a seed.
type SeedDisk struct {
	Index       int    `json:"index"`
	Capacity    int64  `json:"capacity"`
	File        string `json:"file"` // relative to the seed folder
	Fingerprint string `json:"fingerprint"`
}

// SeedProgress is told what a seed command does, one line at a time.
type SeedProgress func(format string, args ...any)

// SeedExport writes the VMs of the job that vms names (keys of the job,
// as `ferry run` knows them) into dir: a snapshot of each, its disks as
// sparse images, verified against what was read, and seed.json last. A
// dir holding a seed of another job is refused; one of this job is
// replaced.
func (e *Engine) SeedExport(ctx context.Context, job *config.Job, vms []string, dir string, progress SeedProgress) (*SeedManifest, error) {
	if len(vms) == 0 {
		return nil, fmt.Errorf("seed export of job %q: no VMs to export: %w", job.Name, errdefs.ErrInvalidArgument)
	}
	if old, err := ReadSeed(dir); err == nil && old.Job != job.Name {
		return nil, fmt.Errorf("seed export: %s holds a seed of job %q, not %q: use another folder: %w", dir, old.Job, job.Name, errdefs.ErrAlreadyExists)
	}
	src, _, _, err := e.Source(ctx, job)
	if err != nil {
		return nil, fmt.Errorf("seed export of job %q: source %s: %w", job.Name, job.Source.Address(), err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("seed export: %w", err)
	}
	// A seed being replaced is no seed until the new manifest is written.
	if err := os.Remove(filepath.Join(dir, SeedFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("seed export: %w", err)
	}
	m := &SeedManifest{Version: 1, Job: job.Name, Created: e.now().UTC(), Source: job.Source.Address(), Block: datamover.DefaultBlockSize}
	for i, key := range vms {
		v, err := e.seedExportVM(ctx, src, job, key, dir, fmt.Sprintf("vm%d", i), progress)
		if err != nil {
			return nil, fmt.Errorf("seed export of job %q vm %q: %w", job.Name, key, err)
		}
		m.VMs = append(m.VMs, *v)
	}
	if err := writeSeed(dir, m); err != nil {
		return nil, err
	}
	return m, nil
}

func (e *Engine) seedExportVM(ctx context.Context, src sdk.Source, job *config.Job, key, dir, sub string, progress SeedProgress) (*SeedVM, error) {
	vm, err := src.DescribeVM(ctx, key)
	if err != nil {
		return nil, err
	}
	snap, err := src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: key, Name: "ferry-seed", Quiesce: job.Quiesce})
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := src.RemoveSnapshot(ctx, key, snap.ID); err != nil {
			e.log().Warn("remove the seed's snapshot", "vm", key, "snapshot", snap.ID, "error", err)
		}
	}()
	out := &SeedVM{Entry: key, VM: *vm, Snapshot: snap.Created, Quiesced: snap.Quiesced}
	if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
		return nil, err
	}
	for _, d := range snap.Disks {
		file := filepath.Join(sub, fmt.Sprintf("disk%d.img", d.Index))
		fp, err := e.seedExportDisk(ctx, src, key, snap.ID, d, filepath.Join(dir, file))
		if err != nil {
			return nil, fmt.Errorf("disk %d: %w", d.Index, err)
		}
		progress("%s disk %d: %s exported and verified", key, d.Index, plan.Human(d.Capacity))
		out.Disks = append(out.Disks, SeedDisk{Index: d.Index, Capacity: d.Capacity, File: file, Fingerprint: fp})
	}
	return out, nil
}

func (e *Engine) seedExportDisk(ctx context.Context, src sdk.Source, key, snap string, d sdk.SnapshotDisk, path string) (string, error) {
	var alloc []sdk.Extent
	if err := src.ChangedAreas(ctx, sdk.ChangedAreasRequest{VM: key, Snapshot: snap, Disk: d.Index}, func(b []sdk.Extent) error {
		alloc = append(alloc, b...)
		return nil
	}); err != nil {
		return "", fmt.Errorf("allocated areas: %w", err)
	}
	if alloc == nil {
		alloc = []sdk.Extent{}
	}
	rd, err := src.OpenSnapshotDisk(ctx, key, snap, d.Index)
	if err != nil {
		return "", err
	}
	defer rd.Close()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := f.Truncate(d.Capacity); err != nil {
		return "", err
	}
	fold := newFingerprint()
	if _, err := datamover.Move(ctx, datamover.Request{Source: rd, Size: d.Capacity, Allocated: alloc, Digests: fold,
		TargetZero: true, Sink: datamover.NewReceiver(f, d.Capacity), Sync: func(context.Context) error { return f.Sync() }}, datamover.Options{}); err != nil {
		return "", err
	}
	if err := rd.Close(); err != nil {
		return "", fmt.Errorf("read the snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	read := fold.sum()
	wrote, err := fingerprintOf(ctx, f, d.Capacity)
	if err != nil {
		return "", fmt.Errorf("verify %s: %w", path, err)
	}
	if wrote != read {
		return "", fmt.Errorf("verify %s: the image does not hold what was read from the source: %w", path, errdefs.ErrDataLoss)
	}
	return read, f.Close()
}

// SeedImport makes the replicas of the seed in dir on the job's target:
// each VM's replica is created as a run would create it (owner, network
// map) and written from the seed's images, each image checked before and
// the replica after. known reports whether the catalog has a replica of a
// VM of the job already: seeding is for a first copy, and such a VM is
// refused. A replica an interrupted import made (this job's, without
// restore points) is written again.
func (e *Engine) SeedImport(ctx context.Context, job *config.Job, dir string, known func(vm string) bool, progress SeedProgress) (*SeedManifest, error) {
	m, err := ReadSeed(dir)
	if err != nil {
		return nil, err
	}
	if m.Job != job.Name {
		return nil, fmt.Errorf("seed import: %s is a seed of job %q, not %q: %w", dir, m.Job, job.Name, errdefs.ErrInvalidArgument)
	}
	tgt, _, err := e.Target(ctx, job)
	if err != nil {
		return nil, fmt.Errorf("seed import of job %q: target %s: %w", job.Name, job.Target.Address(), err)
	}
	for i := range m.VMs {
		v := &m.VMs[i]
		if known(v.Entry) {
			return nil, fmt.Errorf("seed import of job %q vm %q: the job has a replica of it already; a seed only starts a replica: %w", job.Name, v.Entry, errdefs.ErrFailedPrecondition)
		}
		if err := e.seedImportVM(ctx, tgt, job, dir, v, progress); err != nil {
			return nil, fmt.Errorf("seed import of job %q vm %q: %w", job.Name, v.Entry, err)
		}
	}
	return m, nil
}

func (e *Engine) seedImportVM(ctx context.Context, tgt sdk.Target, job *config.Job, dir string, v *SeedVM, progress SeedProgress) error {
	// The images first: a damaged seed makes no replica.
	for _, d := range v.Disks {
		f, err := openSeedImage(dir, d)
		if err != nil {
			return err
		}
		fp, err := fingerprintOf(ctx, f, d.Capacity)
		f.Close()
		if err != nil {
			return fmt.Errorf("check %s: %w", d.File, err)
		}
		if fp != d.Fingerprint {
			return fmt.Errorf("seed image %s does not hold what was exported (damaged on the way?): %w", d.File, errdefs.ErrDataLoss)
		}
	}
	name := job.ReplicaName(v.Entry, v.VM.Name)
	owner := Owner(job, &v.VM)
	rep, err := tgt.GetReplica(ctx, name)
	fresh := false
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		if rep, err = tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: name, VM: v.VM, NetworkMap: networkMap(job), Owner: owner}); err != nil {
			return fmt.Errorf("create replica %q: %w", name, err)
		}
		fresh = true
	case err != nil:
		return fmt.Errorf("replica %q: %w", name, err)
	default:
		points, err := tgt.ListRestorePoints(ctx, rep.ID)
		if err != nil {
			return fmt.Errorf("replica %q: %w", name, err)
		}
		if rep.Owner != owner || len(points) > 0 {
			return fmt.Errorf("target %s has a replica %q already (owner %s, %d restore points); a seed only starts a new one: %w",
				job.Target.Address(), name, rep.Owner, len(points), errdefs.ErrAlreadyExists)
		}
	}
	for _, d := range v.Disks {
		if err := e.seedImportDisk(ctx, tgt, rep, dir, d, fresh); err != nil {
			return fmt.Errorf("disk %d: %w", d.Index, err)
		}
		progress("%s disk %d: %s written into replica %s and verified", v.Entry, d.Index, plan.Human(d.Capacity), name)
	}
	return nil
}

func (e *Engine) seedImportDisk(ctx context.Context, tgt sdk.Target, rep *sdk.Replica, dir string, d SeedDisk, fresh bool) error {
	f, err := openSeedImage(dir, d)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := tgt.OpenReplicaDisk(ctx, rep.ID, d.Index, d.Capacity)
	if err != nil {
		return fmt.Errorf("open the replica disk: %w", err)
	}
	// A replica made now reads as zeros: the image's zero blocks are
	// skipped. One an interrupted import made is written whole.
	_, err = datamover.Move(ctx, datamover.Request{Source: fileReader{f, d.Capacity}, Size: d.Capacity, TargetZero: fresh,
		Sink: datamover.NewReceiver(w, d.Capacity), Sync: func(context.Context) error { return w.Sync() }}, datamover.Options{})
	if cerr := w.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close the replica disk: %w", cerr)
	}
	if err != nil {
		return err
	}
	rd, err := tgt.OpenRestorePointDisk(ctx, rep.ID, "", d.Index)
	if err != nil {
		return fmt.Errorf("read the replica back: %w", err)
	}
	defer rd.Close()
	fp, err := fingerprintOf(ctx, rd, d.Capacity)
	if err != nil {
		return fmt.Errorf("read the replica back: %w", err)
	}
	if fp != d.Fingerprint {
		return fmt.Errorf("replica %s does not hold the seed's image %s after writing it: %w", rep.Name, d.File, errdefs.ErrDataLoss)
	}
	return nil
}

// ReadSeed reads a seed folder's manifest.
func ReadSeed(dir string) (*SeedManifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, SeedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s holds no seed (no %s: an export that did not finish, or another folder): %w", dir, SeedFile, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var m SeedManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("seed %s: %s: %w (%w)", dir, SeedFile, err, errdefs.ErrDataLoss)
	}
	if m.Version != 1 || m.Job == "" {
		return nil, fmt.Errorf("seed %s: %s is version %d of job %q: not a seed this ferry reads: %w", dir, SeedFile, m.Version, m.Job, errdefs.ErrInvalidArgument)
	}
	for _, v := range m.VMs {
		for _, d := range v.Disks {
			if !filepath.IsLocal(d.File) || d.Capacity < 0 {
				return nil, fmt.Errorf("seed %s: vm %q disk %d: file %q of %d bytes is not a seed image: %w", dir, v.Entry, d.Index, d.File, d.Capacity, errdefs.ErrDataLoss)
			}
		}
	}
	return &m, nil
}

func writeSeed(dir string, m *SeedManifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+SeedFile+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, SeedFile))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write the seed's manifest: %w", err)
	}
	return nil
}

// openSeedImage opens a seed image and checks its size.
func openSeedImage(dir string, d SeedDisk) (*os.File, error) {
	f, err := os.Open(filepath.Join(dir, d.File))
	if err != nil {
		return nil, fmt.Errorf("seed image: %w", err)
	}
	st, err := f.Stat()
	if err == nil && (!st.Mode().IsRegular() || st.Size() != d.Capacity) {
		err = fmt.Errorf("seed image %s: %d bytes (or not a file), the disk has %d: %w", d.File, st.Size(), d.Capacity, errdefs.ErrDataLoss)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// fileReader reads a seed image as a disk.
type fileReader struct {
	f    *os.File
	size int64
}

func (r fileReader) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r fileReader) Size() int64                             { return r.size }
func (r fileReader) Close() error                            { return nil }

// fingerprint folds the digests a Move puts, segment by segment, into a
// disk's fingerprint (a datamover.DigestStore that knows no digests).
type fingerprint struct {
	mu   sync.Mutex
	segs map[int][sha256.Size]byte
}

func newFingerprint() *fingerprint { return &fingerprint{segs: map[int][sha256.Size]byte{}} }

func (f *fingerprint) Take(ctx context.Context, takes []datamover.Take, wait bool) ([]*datamover.Pending, error) {
	out := make([]*datamover.Pending, len(takes))
	for i := range out {
		out[i] = datamover.Known(nil)
	}
	return out, nil
}

func (f *fingerprint) Put(ctx context.Context, updates []datamover.Update) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, u := range updates {
		if u.Handled != nil {
			return fmt.Errorf("segment %d moved in part: a seed copies whole disks", u.Seg)
		}
		f.segs[u.Seg] = segmentSum(u.Digests)
	}
	return nil
}

func (f *fingerprint) sum() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]int, 0, len(f.segs))
	for k := range f.segs {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	h := sha256.New()
	for _, k := range keys {
		s := f.segs[k]
		h.Write(s[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func segmentSum(ds []datamover.Digest) [sha256.Size]byte {
	h := sha256.New()
	for _, d := range ds {
		h.Write(d[:])
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// fingerprintOf computes the fingerprint of size bytes of r, a segment at
// a time, as a Move of the whole disk would fold it.
func fingerprintOf(ctx context.Context, r interface {
	ReadAt(p []byte, off int64) (int, error)
}, size int64) (string, error) {
	bs := int64(datamover.DefaultBlockSize)
	seg := bs * datamover.DefaultSegmentBlocks
	h := sha256.New()
	for lo := int64(0); lo < size; lo += seg {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		ds, err := datamover.DigestRange(r, lo, min(lo+seg, size), int(bs))
		if err != nil {
			return "", err
		}
		s := segmentSum(ds)
		h.Write(s[:])
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
