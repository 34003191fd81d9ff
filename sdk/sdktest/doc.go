// Package sdktest is the conformance kit of ferry plugins: suites that
// hold a Source, a Target, a Repository or a whole Plugin to the contracts
// written in the sdk package, and in-memory reference components that pass
// them.
//
// # Using the suites
//
// A plugin author runs the suites from an ordinary test, giving a fixture:
// a factory for the component under test, the capabilities it declares,
// and hooks into the author's test environment.
//
//	func TestRepositoryConformance(t *testing.T) {
//		sdktest.RunRepository(t, sdktest.RepositoryFixture{
//			New: func(t *testing.T) sdk.Repository {
//				repo, err := myplugin.NewRepository(t.TempDir())
//				if err != nil {
//					t.Fatal(err)
//				}
//				return repo
//			},
//		})
//	}
//
//	func TestSourceConformance(t *testing.T) {
//		lab := startLab(t) // the author's test hypervisor
//		sdktest.RunSource(t, sdktest.SourceFixture{
//			New:          func(t *testing.T) sdk.Source { return myplugin.NewSource(lab.Endpoint()) },
//			Capabilities: myplugin.SourceCapabilities,
//			VM:           "sdktest-vm",
//			Write: func(t *testing.T, vm string, disk int, off int64, data []byte) {
//				lab.WriteGuestDisk(t, vm, disk, off, data)
//			},
//		})
//	}
//
// Every check is a subtest named after what it checks, so one check runs
// alone with go test -run 'TestSourceConformance/SnapshotFrozen'. A check of
// a capability the fixture does not declare, or that needs a hook the
// fixture leaves nil, is skipped with a message naming it. Random choices
// come from a seed that a failing check logs; -sdktest.seed=N repeats them.
//
// The suites take the sdk interfaces, and the component under test comes
// from the fixture's New, so the same suite runs on a component called
// directly or on one reached over gRPC: Connect serves a plugin in the test
// process over a real gRPC connection and returns the host-side client,
// whose Source, Target and Repository methods configure remote components
// to return from New.
//
// Components that implement sdk.Stopper are stopped by the last check of
// each suite, Stop. When New returns one shared instance, that check stops
// it; run it last (the suites do) or return a fresh instance from New.
//
// # The checks
//
// RunSource: ListVMs (lists the fixture's VM; DescribeVM by name and id
// agrees, folders and tags included; disk indexes are positions),
// DescribeVMUnknown (ErrNotFound), Folders (with the capability: every
// VM's folder is an absolute path, the fixture VM's is SourceFixture.Folder),
// Tags (with the capability: the source is an sdk.TagLister, tags are
// "Category/Name" or "Name", sorted and unique, every VM's tags are
// listed, the fixture VM's are SourceFixture.Tags),
// SnapshotLifecycle (create, list oldest first, remove twice, remove an
// unknown snapshot), SnapshotQuiesce, SnapshotFrozen (a write after a
// snapshot is not in it, through readers opened before and after the
// write, and is in the next one; removing snapshots keeps later writes),
// ReadExact (known data where it was written; random ranges match a full
// read), ReadConcurrent (the same from eight goroutines), ReadPastEnd
// (io.ReaderAt's io.EOF rules), ReadSize, LocalPath (the direct lane's
// file holds the same bytes as ReadAt), ChangedAreasFull (every non-zero
// byte is covered), ChangedAreasIncremental (the areas since an older
// change id cover every byte written since, sorted, non-overlapping, inside
// the disk), ChangedAreasBogusID and ChangedAreasReset (ErrChangeIDReset,
// and tracking works again after a reset), ChangedAreasCallbackError,
// FailbackWrite (with the Failback capability: BeginFailback powers the
// VM off and is idempotent, a second failback is ErrFailedPrecondition,
// failback writes at awkward offsets read back through a snapshot,
// StartFailback powers it on, UndoFailback gives back every byte and the
// power state and is idempotent, CommitFailback keeps the writes and an
// undo after it does nothing), Cancel, Stop.
//
// RunTarget: Placement, ReplicaCreateIdempotent, ReplicaGet (by name and
// id), ReplicaUnknown, ReplicaOwnerAndIncarnation (a replica keeps the
// owner it was created with, an ownerless one is adopted by the first
// owner that asks, a replica deleted and created again under its name has
// a new incarnation), ReplicaDelete, WriterPastEnd (fails, and does not
// grow the disk), RestorePointReadBack (a full pattern with zero runs
// written by concurrent writers on disjoint ranges, then overlapping
// overwrites with zero runs and an unaligned tail: each point reads back
// byte for byte), RestorePointList (oldest first, labels, disk sizes),
// RestorePointUnknown, DiskGrow (growing keeps older points at their
// size; a smaller size never shrinks), DescribedWhileWritten (GetReplica,
// ListReplicas and ListRestorePoints answer, whole, while a writer grows
// disk 0 and syncs a write into each MiB), DeleteOldestPoint and
// DeleteMiddlePoint (the others read back exactly), AbandonedWriter (an
// unclosed writer, with a crash when the fixture can crash the target,
// never changes a restore point), PreparedWrites (a writer that prepares
// writes, sdk.WritePreparer, keeps every point whole when the prepared
// ranges are written in its file, and refuses point changes while open;
// skipped for writers that do not prepare), FailoverUndo, FailoverNewest,
// FailoverTwice (ErrFailedPrecondition), FailoverReIP and ApplyNetwork
// (network map and re-IP rules), CommitFailover, TestFailover (with the
// capability: two test VMs, at an older and the newest point, hold their
// points byte for byte and sit on the mapped or the isolated network
// (TargetFixture.IsolatedNetwork); a start of a running test returns it;
// writes, a new point and deleting the older test's point go on
// undisturbed and never reach the tests; with TargetFixture.WriteTest,
// what a test VM writes never reaches a point or the working state;
// StopTest removes a test and is idempotent), TestFailoverRefusals (no
// point: ErrFailedPrecondition; a bad id: ErrInvalidArgument; unknown
// replica or point: ErrNotFound; unmapped NICs without an isolated
// network: ErrFailedPrecondition; nothing left behind; a failover and
// its undo leave a running test alone), MapReplica (with the capability
// and TargetFixture.MakeVM: a VM that is no replica becomes one, keeps
// its content, has no point, takes points; mapping again returns it),
// MapReplicaRefusals (a disk fewer or larger: ErrFailedPrecondition and
// no replica; no such VM: ErrNotFound; another replica:
// ErrAlreadyExists), FailbackRead (with the Failback
// capability: a replica not failed over is ErrFailedPrecondition; a
// failed-over replica's disks read as its point; with
// TargetFixture.WriteFailedOver, what it writes is reported since the
// failover and since a mark; power off and on are idempotent; after
// UndoFailover every point is intact), CrashKeepsPoints,
// SyncedWritesSurviveCrash (writes before Sync are in the working state,
// after a crash when the fixture can crash), Cancel, Stop.
//
// RunRepository: RoundTrip, GetMissing, IfAbsent, GenerationGrows,
// CASStale, CASMissing, CASRace (16 goroutines increment a counter with
// compare-and-swap; the count is exact), DeleteWrongGeneration,
// DeleteMissing, ListPrefix (exact, sorted, keys with separators and odd
// characters), EmptyObject, LargeObject (20 MiB), AtomicPut (readers never
// see a mix), Damaged (with RepositoryFixture.Damage: a damaged object is
// ErrDataLoss from Get, blocks no List, and Put and Delete with IfAny
// replace and remove it), Located (an sdk.ObjectLocator names a file
// that holds the object's data and its checksum; skipped for other
// repositories), Cancel, Stop.
//
// RunPlugin: Metadata (Plugin.Validate, a name fit for a file name, a
// semantic version), Schema (every schema builds an HCL decoder), Validate
// (every Validate func survives a null and an empty configuration, and its
// diagnostics name attributes that exist).
//
// # The reference components
//
// MemSource, MemTarget and MemRepository keep everything in memory and pass
// every check (MemSource and MemTarget implement failback too: a
// failed-over MemTarget replica runs on copies of its point's disks,
// written with MemTarget.WriteFailedOver). They are the executable reading of the contracts, and serve
// core tests that need a component without a plugin process.
//
// This package is part of the sdk module and imports nothing of ferry
// outside it. It only ever talks to the components it is given.
package sdktest
