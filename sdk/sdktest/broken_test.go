package sdktest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// The suites are only worth something if they fail on components that
// break the contract. Each case below runs a suite on a component with
// one bug; TestSuitesCatchBrokenComponents runs it in a child process
// (a failing subtest cannot be observed from inside its own test run) and
// reads which checks failed and which passed.

// brokenEnv marks the child process that runs TestBroken.
const brokenEnv = "SDKTEST_RUN_BROKEN"

type brokenCase struct {
	name   string
	run    func(t *testing.T)
	fails  []string // checks that must fail
	passes []string // checks that must pass: the failure is the bug's, not the suite's
}

var brokenCases = []brokenCase{
	// Repositories.
	{
		name: "RepositoryIgnoresGeneration",
		run: func(t *testing.T) {
			RunRepository(t, RepositoryFixture{New: func(*testing.T) sdk.Repository { return &repoIgnoresGeneration{NewMemRepository()} }})
		},
		fails:  []string{"IfAbsent", "CASStale", "CASMissing", "DeleteWrongGeneration"},
		passes: []string{"RoundTrip", "LargeObject", "ListPrefix"},
	},
	{
		name: "RepositoryNonAtomicCAS",
		run: func(t *testing.T) {
			RunRepository(t, RepositoryFixture{New: func(*testing.T) sdk.Repository { return &repoNonAtomicCAS{MemRepository: NewMemRepository()} }})
		},
		fails:  []string{"CASRace"},
		passes: []string{"CASStale", "IfAbsent"},
	},
	{
		name: "RepositoryDamageIsNotFound",
		run: func(t *testing.T) {
			repo := NewMemRepository()
			RunRepository(t, RepositoryFixture{New: func(*testing.T) sdk.Repository { return &repoDamageIsNotFound{repo} },
				Damage: func(_ *testing.T, key string) { repo.Damage(key) }})
		},
		fails:  []string{"Damaged"},
		passes: []string{"RoundTrip", "GetMissing"},
	},
	{
		name: "RepositoryDamageBlocksPut",
		run: func(t *testing.T) {
			repo := NewMemRepository()
			RunRepository(t, RepositoryFixture{New: func(*testing.T) sdk.Repository { return &repoDamageBlocksPut{repo} },
				Damage: func(_ *testing.T, key string) { repo.Damage(key) }})
		},
		fails:  []string{"Damaged"},
		passes: []string{"RoundTrip", "IfAbsent"},
	},
	{
		name: "RepositoryUnsortedList",
		run: func(t *testing.T) {
			RunRepository(t, RepositoryFixture{New: func(*testing.T) sdk.Repository { return &repoUnsortedList{NewMemRepository()} }})
		},
		fails:  []string{"ListPrefix"},
		passes: []string{"RoundTrip"},
	},
	{
		name: "RepositoryIgnoresContext",
		run: func(t *testing.T) {
			RunRepository(t, RepositoryFixture{New: func(*testing.T) sdk.Repository { return &repoIgnoresContext{NewMemRepository()} }})
		},
		fails:  []string{"Cancel"},
		passes: []string{"RoundTrip"},
	},
	{
		name: "RepositoryStopHangs",
		run: func(t *testing.T) {
			RunRepository(t, RepositoryFixture{Deadline: 200 * time.Millisecond, New: func(*testing.T) sdk.Repository {
				return &repoStopper{MemRepository: NewMemRepository(), stop: func(context.Context) error { select {} }}
			}})
		},
		fails:  []string{"Stop"},
		passes: []string{"RoundTrip"},
	},
	{
		// The control: a Stop that keeps its deadline passes (not skips).
		name: "RepositoryStopsInTime",
		run: func(t *testing.T) {
			RunRepository(t, RepositoryFixture{Deadline: 200 * time.Millisecond, New: func(*testing.T) sdk.Repository {
				return &repoStopper{MemRepository: NewMemRepository(), stop: func(ctx context.Context) error { return nil }}
			}})
		},
		passes: []string{"Stop", "RoundTrip", "CASRace", "Cancel"},
	},

	// Targets.
	{
		name: "TargetPointsShareWorkingState",
		run: func(t *testing.T) {
			RunTarget(t, targetFixture(false, func(m *MemTarget) sdk.Target { return &targetSharedPoints{m} }))
		},
		fails:  []string{"RestorePointReadBack", "DeleteOldestPoint", "AbandonedWriter"},
		passes: []string{"ReplicaGet", "FailoverTwice"},
	},
	{
		name: "TargetWritesIntoNewestPoint",
		run: func(t *testing.T) {
			RunTarget(t, targetFixture(false, func(m *MemTarget) sdk.Target { return &targetWritesIntoPoint{m} }))
		},
		fails:  []string{"RestorePointReadBack", "AbandonedWriter"},
		passes: []string{"ReplicaGet"},
	},
	{
		name: "TargetDeleteDropsSharedBlocks",
		run: func(t *testing.T) {
			RunTarget(t, targetFixture(false, func(m *MemTarget) sdk.Target { return &targetBadDelete{m} }))
		},
		fails:  []string{"DeleteOldestPoint", "DeleteMiddlePoint"},
		passes: []string{"RestorePointReadBack"},
	},
	{
		name: "TargetDescribesOnlyClosedDisks",
		run: func(t *testing.T) {
			RunTarget(t, targetFixture(false, func(m *MemTarget) sdk.Target { return &targetClosedOnly{MemTarget: m} }))
		},
		fails:  []string{"DescribedWhileWritten"},
		passes: []string{"ReplicaGet", "DiskGrow", "RestorePointReadBack"},
	},
	{
		name: "TargetDropsLabels",
		run: func(t *testing.T) {
			RunTarget(t, targetFixture(false, func(m *MemTarget) sdk.Target { return &targetDropsLabels{m} }))
		},
		fails:  []string{"RestorePointList"},
		passes: []string{"ReplicaGet", "DiskGrow"},
	},
	{
		name: "TargetFailoverTwiceAllowed",
		run: func(t *testing.T) {
			RunTarget(t, targetFixture(false, func(m *MemTarget) sdk.Target { return &targetFailoverTwice{m} }))
		},
		fails:  []string{"FailoverTwice"},
		passes: []string{"FailoverUndo"},
	},
	{
		name: "TargetIgnoresNetwork",
		run: func(t *testing.T) {
			RunTarget(t, targetFixture(false, func(m *MemTarget) sdk.Target { return &targetNoReIP{m} }))
		},
		fails:  []string{"FailoverReIP", "ApplyNetwork"},
		passes: []string{"FailoverUndo"},
	},
	{
		name: "TargetCrashLosesNewestPoint",
		run: func(t *testing.T) {
			fx := targetFixture(false, nil)
			tgt := fx.New(t).(*MemTarget)
			fx.Crash = func(*testing.T) {
				tgt.Crash()
				tgt.mu.Lock()
				defer tgt.mu.Unlock()
				for _, r := range tgt.replicas {
					r.points = r.points[:max(len(r.points)-1, 0)]
				}
			}
			RunTarget(t, fx)
		},
		fails:  []string{"CrashKeepsPoints"},
		passes: []string{"ReplicaGet"},
	},
	{
		name: "TargetSyncDoesNothing",
		run: func(t *testing.T) {
			RunTarget(t, targetFixture(true, func(m *MemTarget) sdk.Target { return &targetNoSync{m} }))
		},
		fails:  []string{"SyncedWritesSurviveCrash"},
		passes: []string{"CrashKeepsPoints"},
	},

	{
		name: "TargetFailbackMissesWrites",
		run: func(t *testing.T) {
			RunTarget(t, targetFixture(false, func(m *MemTarget) sdk.Target { return &targetFailbackMissesWrites{m} }))
		},
		fails:  []string{"FailbackRead"},
		passes: []string{"FailoverUndo", "CommitFailover"},
	},

	// Sources.
	{
		name: "SourceFailbackSavesNothing",
		run: func(t *testing.T) {
			RunSource(t, sourceFixture(func(s *MemSource) sdk.Source { return &sourceFailbackSavesNothing{s} }))
		},
		fails:  []string{"FailbackWrite"},
		passes: []string{"SnapshotLifecycle", "SnapshotFrozen"},
	},
	{
		name: "SourceSnapshotNotFrozen",
		run: func(t *testing.T) {
			RunSource(t, sourceFixture(func(s *MemSource) sdk.Source { return &sourceLiveReads{s} }))
		},
		fails:  []string{"SnapshotFrozen"},
		passes: []string{"ListVMs", "SnapshotLifecycle"},
	},
	{
		name: "SourceRemoveRevertsDisk",
		run: func(t *testing.T) {
			RunSource(t, sourceFixture(func(s *MemSource) sdk.Source { return &sourceRevertsOnRemove{s} }))
		},
		fails:  []string{"SnapshotFrozen"},
		passes: []string{"ListVMs"},
	},
	{
		name: "SourceRemoveUnknownFails",
		run: func(t *testing.T) {
			RunSource(t, sourceFixture(func(s *MemSource) sdk.Source { return &sourceStrictRemove{s} }))
		},
		fails:  []string{"SnapshotLifecycle"},
		passes: []string{"ListVMs"},
	},
	{
		name: "SourceChangedAreasMissTail",
		run: func(t *testing.T) {
			RunSource(t, sourceFixture(func(s *MemSource) sdk.Source { return &sourceShortAreas{s} }))
		},
		fails:  []string{"ChangedAreasIncremental"},
		passes: []string{"ChangedAreasBogusID"},
	},
	{
		name: "SourceAcceptsBogusChangeID",
		run: func(t *testing.T) {
			RunSource(t, sourceFixture(func(s *MemSource) sdk.Source { return &sourceNoReset{s} }))
		},
		fails:  []string{"ChangedAreasBogusID", "ChangedAreasReset"},
		passes: []string{"ChangedAreasIncremental"},
	},
	{
		name: "SourceShortReadWithoutEOF",
		run: func(t *testing.T) {
			RunSource(t, sourceFixture(func(s *MemSource) sdk.Source { return &sourceNoEOF{s} }))
		},
		fails:  []string{"ReadPastEnd"},
		passes: []string{"ReadExact", "ReadConcurrent"},
	},
	{
		name: "SourceLocalPathDiffers",
		run: func(t *testing.T) {
			dir := t.TempDir()
			fx := sourceFixture(func(s *MemSource) sdk.Source { return &directSource{MemSource: s, dir: dir, corrupt: true} })
			fx.Capabilities.DirectData = true
			RunSource(t, fx)
		},
		fails:  []string{"LocalPath"},
		passes: []string{"ReadExact"},
	},
	{
		name: "SourceTagsAndFoldersOff",
		run: func(t *testing.T) {
			RunSource(t, sourceFixture(func(s *MemSource) sdk.Source { return &sourceBadInventory{s} }))
		},
		fails:  []string{"Folders", "Tags", "ListVMs"},
		passes: []string{"DescribeVMUnknown", "SnapshotLifecycle"},
	},
	{
		name: "SourceIgnoresContext",
		run: func(t *testing.T) {
			RunSource(t, sourceFixture(func(s *MemSource) sdk.Source { return &sourceIgnoresContext{s} }))
		},
		fails:  []string{"Cancel"},
		passes: []string{"ListVMs"},
	},

	// Plugins.
	{
		name: "PluginValidatePanics",
		run: func(t *testing.T) {
			p := memPlugin()
			c := p.Repositories["mem"]
			c.Schema = &schema.Block{Attributes: map[string]*schema.Attribute{"path": {Type: cty.String}}}
			c.Validate = func(v cty.Value) schema.Diagnostics { v.GetAttr("path").AsString(); return nil }
			p.Repositories["mem"] = c
			RunPlugin(t, p)
		},
		fails:  []string{"Validate/repository_mem"},
		passes: []string{"Metadata", "Schema/repository_mem", "Validate/source_mem"},
	},
	{
		name: "PluginDiagnosticNamesNoAttribute",
		run: func(t *testing.T) {
			p := memPlugin()
			c := p.Repositories["mem"]
			c.Validate = func(cty.Value) schema.Diagnostics {
				var d schema.Diagnostics
				d.Errorf(cty.GetAttrPath("no_such_attribute"), "bad", "")
				return d
			}
			p.Repositories["mem"] = c
			RunPlugin(t, p)
		},
		fails:  []string{"Validate/repository_mem"},
		passes: []string{"Metadata"},
	},
	{
		name:   "PluginBadVersion",
		run:    func(t *testing.T) { p := memPlugin(); p.Version = "v1.2"; RunPlugin(t, p) },
		fails:  []string{"Metadata"},
		passes: []string{"Schema/source_mem"},
	},
	{
		name: "PluginBadSchema",
		run: func(t *testing.T) {
			p := memPlugin()
			c := p.Targets["mem"]
			c.Schema = &schema.Block{Attributes: map[string]*schema.Attribute{"no type": {}}}
			p.Targets["mem"] = c
			RunPlugin(t, p)
		},
		fails:  []string{"Metadata", "Schema/target_mem"},
		passes: []string{"Schema/source_mem"},
	},
}

// TestBroken runs the broken cases; only the child process does.
func TestBroken(t *testing.T) {
	if os.Getenv(brokenEnv) == "" {
		t.Skip("run by TestSuitesCatchBrokenComponents in a child process")
	}
	for _, bc := range brokenCases {
		t.Run(bc.name, bc.run)
	}
}

// TestSuitesCatchBrokenComponents runs each broken case in a child test
// process, limited to the checks it names, and checks the verdicts.
func TestSuitesCatchBrokenComponents(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("inside the child process")
	}
	for _, bc := range brokenCases {
		t.Run(bc.name, func(t *testing.T) {
			t.Parallel()
			checks := slices.Concat(bc.fails, bc.passes)
			levels := make([]string, 0, 2)
			for _, c := range checks {
				for i, part := range strings.Split(c, "/") {
					if i == len(levels) {
						levels = append(levels, "")
					}
					if !slices.Contains(strings.Split(levels[i], "|"), regexp.QuoteMeta(part)) {
						levels[i] = strings.TrimPrefix(levels[i]+"|"+regexp.QuoteMeta(part), "|")
					}
				}
			}
			run := "^TestBroken$/^" + regexp.QuoteMeta(bc.name) + "$"
			for _, l := range levels {
				run += "/^(" + l + ")$"
			}
			cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.v", "-test.count=1", "-test.timeout=1m")
			cmd.Env = append(os.Environ(), brokenEnv+"=1")
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if len(bc.fails) > 0 && !errors.As(err, &exit) {
				t.Fatalf("the suite passed a broken component (%v):\n%s", err, out)
			}
			if len(bc.fails) == 0 && err != nil {
				t.Fatalf("the suite failed a sound component (%v):\n%s", err, out)
			}
			verdict := func(check, v string) bool {
				return strings.Contains(string(out), "--- "+v+": TestBroken/"+bc.name+"/"+check+" (")
			}
			for _, c := range bc.fails {
				if !verdict(c, "FAIL") {
					t.Errorf("check %s did not fail", c)
				}
			}
			for _, c := range bc.passes {
				if !verdict(c, "PASS") {
					t.Errorf("check %s did not pass", c)
				}
			}
			if t.Failed() {
				t.Logf("child output:\n%s", out)
			}
		})
	}
}

// The broken components. Each wraps an in-memory one and breaks one rule.

type repoIgnoresGeneration struct{ *MemRepository }

func (r *repoIgnoresGeneration) Put(ctx context.Context, key string, data []byte, _ int64) (int64, error) {
	return r.MemRepository.Put(ctx, key, data, sdk.IfAny)
}

func (r *repoIgnoresGeneration) Delete(ctx context.Context, key string, _ int64) error {
	return r.MemRepository.Delete(ctx, key, sdk.IfAny)
}

// repoNonAtomicCAS checks the generation, then writes a moment later: two
// writers that read the same generation both win.
type repoNonAtomicCAS struct {
	*MemRepository
}

func (r *repoNonAtomicCAS) Put(ctx context.Context, key string, data []byte, ifGen int64) (int64, error) {
	if ifGen > 0 {
		_, info, err := r.MemRepository.Get(ctx, key)
		if err != nil || info.Generation != ifGen {
			return 0, errdefs.ErrFailedPrecondition
		}
		time.Sleep(2 * time.Millisecond)
		ifGen = sdk.IfAny
	}
	return r.MemRepository.Put(ctx, key, data, ifGen)
}

// repoDamageIsNotFound reports a damaged object as missing: a caller
// would put over it with IfAbsent and fail forever.
type repoDamageIsNotFound struct{ *MemRepository }

func (r *repoDamageIsNotFound) Get(ctx context.Context, key string) ([]byte, sdk.ObjectInfo, error) {
	data, info, err := r.MemRepository.Get(ctx, key)
	if errors.Is(err, errdefs.ErrDataLoss) {
		err = fmt.Errorf("object %q: %w", key, errdefs.ErrNotFound)
	}
	return data, info, err
}

// repoDamageBlocksPut refuses every put over a damaged object, as the
// local repository once did: the object stays until a person deletes it.
type repoDamageBlocksPut struct{ *MemRepository }

func (r *repoDamageBlocksPut) Put(ctx context.Context, key string, data []byte, ifGen int64) (int64, error) {
	if _, _, err := r.MemRepository.Get(ctx, key); errors.Is(err, errdefs.ErrDataLoss) {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	return r.MemRepository.Put(ctx, key, data, ifGen)
}

type repoUnsortedList struct{ *MemRepository }

func (r *repoUnsortedList) List(ctx context.Context, prefix string) ([]sdk.ObjectInfo, error) {
	objs, err := r.MemRepository.List(ctx, prefix)
	slices.Reverse(objs)
	return objs, err
}

type repoIgnoresContext struct{ *MemRepository }

func (r *repoIgnoresContext) Put(_ context.Context, key string, data []byte, ifGen int64) (int64, error) {
	return r.MemRepository.Put(context.Background(), key, data, ifGen)
}

func (r *repoIgnoresContext) Get(_ context.Context, key string) ([]byte, sdk.ObjectInfo, error) {
	return r.MemRepository.Get(context.Background(), key)
}

type repoStopper struct {
	*MemRepository
	stop func(context.Context) error
}

func (r *repoStopper) Stop(ctx context.Context) error { return r.stop(ctx) }

// targetSharedPoints reads every restore point from the working state.
type targetSharedPoints struct{ *MemTarget }

func (m *targetSharedPoints) OpenRestorePointDisk(ctx context.Context, replica, point string, disk int) (sdk.DiskReader, error) {
	if _, err := m.MemTarget.OpenRestorePointDisk(ctx, replica, point, disk); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, _ := m.find(replica)
	return &memReader{disk: r.disks[disk].clone()}, nil
}

// targetWritesIntoPoint writes into the newest restore point as well as
// the working state, as a target that keeps writing the last delta does.
type targetWritesIntoPoint struct{ *MemTarget }

type pointWriter struct {
	sdk.DiskWriter
	m       *MemTarget
	replica string
	disk    int
}

func (w *pointWriter) WriteAt(p []byte, off int64) (int, error) {
	n, err := w.DiskWriter.WriteAt(p, off)
	if err == nil {
		w.m.mu.Lock()
		defer w.m.mu.Unlock()
		if r, _ := w.m.find(w.replica); r != nil && len(r.points) > 0 {
			r.points[len(r.points)-1].disks[w.disk].writeAt(p, off)
		}
	}
	return n, err
}

func (m *targetWritesIntoPoint) OpenReplicaDisk(ctx context.Context, replica string, disk int, size int64) (sdk.DiskWriter, error) {
	w, err := m.MemTarget.OpenReplicaDisk(ctx, replica, disk, size)
	if err != nil {
		return nil, err
	}
	return &pointWriter{DiskWriter: w, m: m.MemTarget, replica: replica, disk: disk}, nil
}

// targetNoSync acknowledges Sync without making anything durable.
type targetNoSync struct{ *MemTarget }

type noSyncWriter struct{ sdk.DiskWriter }

func (noSyncWriter) Sync() error { return nil }

func (m *targetNoSync) OpenReplicaDisk(ctx context.Context, replica string, disk int, size int64) (sdk.DiskWriter, error) {
	w, err := m.MemTarget.OpenReplicaDisk(ctx, replica, disk, size)
	if err != nil {
		return nil, err
	}
	return noSyncWriter{w}, nil
}

// targetClosedOnly cannot describe a replica while a writer of one of
// its disks is open, as a target reading a disk's metadata from a file
// its writer is extending would fail.
type targetClosedOnly struct {
	*MemTarget
	mu      sync.Mutex
	writers map[string]int // open writers by replica
}

type closedOnlyWriter struct {
	sdk.DiskWriter
	t       *targetClosedOnly
	replica string
	once    sync.Once
}

func (w *closedOnlyWriter) Close() error {
	w.once.Do(func() {
		w.t.mu.Lock()
		w.t.writers[w.replica]--
		w.t.mu.Unlock()
	})
	return w.DiskWriter.Close()
}

func (m *targetClosedOnly) OpenReplicaDisk(ctx context.Context, replica string, disk int, size int64) (sdk.DiskWriter, error) {
	w, err := m.MemTarget.OpenReplicaDisk(ctx, replica, disk, size)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.writers == nil {
		m.writers = map[string]int{}
	}
	m.writers[replica]++
	m.mu.Unlock()
	return &closedOnlyWriter{DiskWriter: w, t: m, replica: replica}, nil
}

func (m *targetClosedOnly) GetReplica(ctx context.Context, idOrName string) (*sdk.Replica, error) {
	r, err := m.MemTarget.GetReplica(ctx, idOrName)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.writers[r.ID] > 0 {
		return nil, fmt.Errorf("replica %s: disk header torn: %w", r.ID, errdefs.ErrDataLoss)
	}
	return r, nil
}

// targetBadDelete deletes a point together with the blocks the next point
// shares with it, as a delta chain merged the wrong way round would.
type targetBadDelete struct{ *MemTarget }

func (m *targetBadDelete) DeleteRestorePoint(ctx context.Context, replica, point string) error {
	m.mu.Lock()
	if r, err := m.find(replica); err == nil {
		if i, err := r.point(point); err == nil && i+1 < len(r.points) {
			for d, disk := range r.points[i].disks {
				next := r.points[i+1].disks[d]
				for b, blk := range disk.blocks {
					if nb, ok := next.blocks[b]; ok && &nb[0] == &blk[0] {
						delete(next.blocks, b)
					}
				}
			}
		}
	}
	m.mu.Unlock()
	return m.MemTarget.DeleteRestorePoint(ctx, replica, point)
}

type targetDropsLabels struct{ *MemTarget }

func (m *targetDropsLabels) CreateRestorePoint(ctx context.Context, replica string, labels map[string]string) (*sdk.RestorePoint, error) {
	rp, err := m.MemTarget.CreateRestorePoint(ctx, replica, nil)
	if rp != nil {
		rp.Labels = labels // claims the labels it did not keep
	}
	return rp, err
}

// targetFailoverTwice lets a failed-over replica fail over again.
type targetFailoverTwice struct{ *MemTarget }

func (m *targetFailoverTwice) Failover(ctx context.Context, req sdk.FailoverRequest) (*sdk.Replica, error) {
	r, err := m.MemTarget.Failover(ctx, req)
	if errors.Is(err, errdefs.ErrFailedPrecondition) {
		return m.GetReplica(ctx, req.Replica)
	}
	return r, err
}

type targetNoReIP struct{ *MemTarget }

func (m *targetNoReIP) Failover(ctx context.Context, req sdk.FailoverRequest) (*sdk.Replica, error) {
	req.Network = sdk.NetworkConfig{}
	return m.MemTarget.Failover(ctx, req)
}

func (m *targetNoReIP) ApplyNetwork(ctx context.Context, replica string, _ sdk.NetworkConfig) (*sdk.Replica, error) {
	return m.MemTarget.ApplyNetwork(ctx, replica, sdk.NetworkConfig{})
}

// sourceLiveReads reads the live disk instead of the snapshot's.
type sourceLiveReads struct{ *MemSource }

type liveReader struct {
	s    *MemSource
	disk *trackedDisk
}

func (r *liveReader) ReadAt(p []byte, off int64) (int, error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.disk.data.readAt(p, off)
}

func (r *liveReader) Size() int64  { return r.disk.data.size }
func (r *liveReader) Close() error { return nil }

func (s *sourceLiveReads) OpenSnapshotDisk(ctx context.Context, vm, snapshot string, disk int) (sdk.DiskReader, error) {
	if _, err := s.MemSource.OpenSnapshotDisk(ctx, vm, snapshot, disk); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, _ := s.find(vm)
	return &liveReader{s: s.MemSource, disk: m.disks[disk]}, nil
}

// sourceRevertsOnRemove throws away the writes made since a snapshot when
// it is removed: a revert where a consolidation belongs.
type sourceRevertsOnRemove struct{ *MemSource }

func (s *sourceRevertsOnRemove) RemoveSnapshot(ctx context.Context, vm, snapshot string) error {
	s.mu.Lock()
	if m, err := s.find(vm); err == nil {
		for _, sn := range m.snaps {
			if sn.info.ID == snapshot {
				for d := range m.disks {
					m.disks[d].data = sn.disks[d].data.clone()
				}
			}
		}
	}
	s.mu.Unlock()
	return s.MemSource.RemoveSnapshot(ctx, vm, snapshot)
}

type sourceStrictRemove struct{ *MemSource }

func (s *sourceStrictRemove) RemoveSnapshot(ctx context.Context, vm, snapshot string) error {
	snaps, err := s.ListSnapshots(ctx, vm)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(snaps, func(sn sdk.Snapshot) bool { return sn.ID == snapshot }) {
		return errdefs.ErrNotFound
	}
	return s.MemSource.RemoveSnapshot(ctx, vm, snapshot)
}

// sourceShortAreas reports every changed area one byte short.
type sourceShortAreas struct{ *MemSource }

func (s *sourceShortAreas) ChangedAreas(ctx context.Context, req sdk.ChangedAreasRequest, fn func([]sdk.Extent) error) error {
	return s.MemSource.ChangedAreas(ctx, req, func(batch []sdk.Extent) error {
		var short []sdk.Extent
		for _, e := range batch {
			if e.Length > 1 {
				short = append(short, sdk.Extent{Offset: e.Offset, Length: e.Length - 1})
			}
		}
		return fn(short)
	})
}

// sourceNoReset answers a change id it cannot honour with every allocated
// area instead of ErrChangeIDReset.
type sourceNoReset struct{ *MemSource }

func (s *sourceNoReset) ChangedAreas(ctx context.Context, req sdk.ChangedAreasRequest, fn func([]sdk.Extent) error) error {
	err := s.MemSource.ChangedAreas(ctx, req, fn)
	if errors.Is(err, errdefs.ErrChangeIDReset) {
		req.ChangeID = ""
		return s.MemSource.ChangedAreas(ctx, req, fn)
	}
	return err
}

// sourceNoEOF returns a short read at the end of the disk without io.EOF.
type sourceNoEOF struct{ *MemSource }

type noEOFReader struct{ sdk.DiskReader }

func (r noEOFReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.DiskReader.ReadAt(p, off)
	if err == io.EOF {
		err = nil
	}
	return n, err
}

func (s *sourceNoEOF) OpenSnapshotDisk(ctx context.Context, vm, snapshot string, disk int) (sdk.DiskReader, error) {
	r, err := s.MemSource.OpenSnapshotDisk(ctx, vm, snapshot, disk)
	if err != nil {
		return nil, err
	}
	return noEOFReader{r}, nil
}

// sourceBadInventory lists VMs with a relative folder and an unsorted tag
// its ListTags does not know, and describes them without either.
type sourceBadInventory struct{ *MemSource }

func (s *sourceBadInventory) ListVMs(ctx context.Context) ([]sdk.VM, error) {
	vms, err := s.MemSource.ListVMs(ctx)
	for i := range vms {
		vms[i].Folder = strings.TrimPrefix(vms[i].Folder, "/")
		vms[i].Tags = append(vms[i].Tags, "a-tag/nobody-knows")
	}
	return vms, err
}

func (s *sourceBadInventory) DescribeVM(ctx context.Context, vm string) (*sdk.VM, error) {
	v, err := s.MemSource.DescribeVM(ctx, vm)
	if v != nil {
		v.Folder, v.Tags = "", nil
	}
	return v, err
}

type sourceIgnoresContext struct{ *MemSource }

func (s *sourceIgnoresContext) ListVMs(context.Context) ([]sdk.VM, error) {
	return s.MemSource.ListVMs(context.Background())
}

// targetFailbackMissesWrites reports nothing a failed-over replica wrote.
type targetFailbackMissesWrites struct{ *MemTarget }

func (t *targetFailbackMissesWrites) FailedOverChanges(ctx context.Context, req sdk.FailedOverChangesRequest, fn func([]sdk.Extent) error) (string, error) {
	return t.MemTarget.FailedOverChanges(ctx, req, func([]sdk.Extent) error { return nil })
}

// sourceFailbackSavesNothing writes failbacks without saving what they
// overwrite: an undo cannot give production back.
type sourceFailbackSavesNothing struct{ *MemSource }

func (s *sourceFailbackSavesNothing) OpenFailbackDisk(ctx context.Context, vm, id string, disk int, size int64) (sdk.DiskWriter, error) {
	w, err := s.MemSource.OpenFailbackDisk(ctx, vm, id, disk, size)
	if err != nil {
		return nil, err
	}
	w.(*memFailbackWriter).unsaving = true
	return w, nil
}
