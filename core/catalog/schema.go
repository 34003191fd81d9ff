package catalog

import (
	"fmt"
	"strconv"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	bolt "go.etcd.io/bbolt"
)

// Bucket names. They are part of the file format: never rename one outside
// a migration.
var (
	bucketMeta        = []byte("meta")
	bucketSessions    = []byte("sessions")         // session id -> Session (JSON)
	bucketSessionSeq  = []byte("session_order")    // seq (8 bytes, big endian) -> session id
	bucketJobSessions = []byte("job_sessions")     // job NUL seq -> session id
	bucketRunning     = []byte("running_sessions") // session id -> nothing, while "running"
	bucketReplicas    = []byte("replicas")         // job NUL vm -> Replica (JSON)
	bucketPoints      = []byte("restore_points")   // job NUL vm NUL created NUL id -> RestorePoint (JSON)
	bucketJobs        = []byte("jobs")             // job -> JobState (JSON)
	bucketGone        = []byte("gone_replicas")    // job NUL vm NUL replica id -> GoneReplica (JSON)
	bucketRunQueue    = []byte("run_queue")        // job -> QueuedRun (JSON): runs a server owes
	// "plan" NUL plan NUL started NUL run, or "vm" NUL job NUL vm NUL
	// started NUL run -> TestResult (JSON)
	bucketTests     = []byte("test_results")
	bucketVMTests   = []byte("vm_last_tests") // job NUL vm -> VMTest (JSON)
	bucketFailbacks = []byte("failbacks")     // job NUL vm -> Failback (JSON)

	keySchemaVersion = []byte("schema_version") // in meta, decimal ASCII
)

// currentBuckets are the buckets the newest schema has. Open checks them
// after migrating, so the rest of the package may take them for granted.
var currentBuckets = [][]byte{
	bucketMeta, bucketSessions, bucketSessionSeq, bucketJobSessions,
	bucketRunning, bucketReplicas, bucketPoints, bucketJobs, bucketGone,
	bucketRunQueue, bucketTests, bucketVMTests, bucketFailbacks,
}

// migration brings the catalog from version-1 to version. It runs inside
// the write transaction that also records the new version, so it either
// happens whole or not at all.
type migration struct {
	name  string
	apply func(tx *bolt.Tx) error
}

// migrations is the schema history: entry i brings the catalog to version
// i+1. Append to it; never edit or reorder a released entry, because
// catalogs in the field have already run it.
var migrations = []migration{
	{name: "create buckets", apply: migrateCreateBuckets},
	{name: "gone replicas", apply: migrateGoneReplicas},
	{name: "run queue", apply: migrateRunQueue},
	{name: "test results", apply: migrateTestResults},
	{name: "failbacks", apply: migrateFailbacks},
}

// migrateCreateBuckets is schema version 1. It names its buckets literally
// rather than through currentBuckets: a migration must do tomorrow exactly
// what it did the day it shipped.
func migrateCreateBuckets(tx *bolt.Tx) error {
	for _, name := range []string{
		"meta", "sessions", "session_order", "job_sessions",
		"running_sessions", "replicas", "restore_points", "jobs",
	} {
		if _, err := tx.CreateBucket([]byte(name)); err != nil {
			return fmt.Errorf("create bucket %q: %w", name, err)
		}
	}
	return nil
}

// migrateGoneReplicas is schema version 2: the records of replicas the
// target no longer had.
func migrateGoneReplicas(tx *bolt.Tx) error {
	if _, err := tx.CreateBucket([]byte("gone_replicas")); err != nil {
		return fmt.Errorf("create bucket %q: %w", "gone_replicas", err)
	}
	return nil
}

// migrateRunQueue is schema version 3: the runs a ferry server owes,
// kept across its restarts.
func migrateRunQueue(tx *bolt.Tx) error {
	if _, err := tx.CreateBucket([]byte("run_queue")); err != nil {
		return fmt.Errorf("create bucket %q: %w", "run_queue", err)
	}
	return nil
}

// migrateTestResults is schema version 4: the results of test failovers,
// and each VM's last test.
func migrateTestResults(tx *bolt.Tx) error {
	for _, name := range []string{"test_results", "vm_last_tests"} {
		if _, err := tx.CreateBucket([]byte(name)); err != nil {
			return fmt.Errorf("create bucket %q: %w", name, err)
		}
	}
	return nil
}

// migrateFailbacks is schema version 5: the state of each failback under
// way.
func migrateFailbacks(tx *bolt.Tx) error {
	if _, err := tx.CreateBucket([]byte("failbacks")); err != nil {
		return fmt.Errorf("create bucket %q: %w", "failbacks", err)
	}
	return nil
}

// readVersion returns the schema version of the open file: 0 for a file
// that is not a catalog yet (new and empty).
func readVersion(tx *bolt.Tx) (int, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		var names []string
		_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			names = append(names, string(name))
			return nil
		})
		if len(names) > 0 {
			return 0, fmt.Errorf("not a ferry catalog: it has buckets %q but no %q bucket", names, bucketMeta)
		}
		return 0, nil
	}
	raw := meta.Get(keySchemaVersion)
	if raw == nil {
		return 0, corrupt("meta bucket has no schema version")
	}
	v, err := strconv.Atoi(string(raw))
	if err != nil || v < 1 {
		return 0, corrupt("schema version %q is not a positive number", raw)
	}
	return v, nil
}

func writeVersion(tx *bolt.Tx, v int) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return fmt.Errorf("record schema version %d: no %q bucket", v, bucketMeta)
	}
	if err := meta.Put(keySchemaVersion, []byte(strconv.Itoa(v))); err != nil {
		return fmt.Errorf("record schema version %d: %w", v, err)
	}
	return nil
}

// migrate runs the pending migrations of list, each in its own
// transaction that also records the version it reached. A failing
// migration leaves the version before it, and everything it did is rolled
// back.
func migrate(db *bolt.DB, list []migration) error {
	var have int
	if err := db.View(func(tx *bolt.Tx) error {
		var err error
		have, err = readVersion(tx)
		return err
	}); err != nil {
		return err
	}
	if have > len(list) {
		return newerSchemaError(have, len(list))
	}
	for i := have; i < len(list); i++ {
		m, version := list[i], i+1
		err := db.Update(func(tx *bolt.Tx) error {
			if err := m.apply(tx); err != nil {
				return err
			}
			return writeVersion(tx, version)
		})
		if err != nil {
			return fmt.Errorf("migrate to schema version %d (%s): %w", version, m.name, err)
		}
	}
	return db.View(func(tx *bolt.Tx) error { return checkBuckets(tx, len(list)) })
}

// checkBuckets checks that the buckets of the newest schema are there.
func checkBuckets(tx *bolt.Tx, version int) error {
	for _, name := range currentBuckets {
		if tx.Bucket(name) == nil {
			return corrupt("bucket %q missing at schema version %d", name, version)
		}
	}
	return nil
}

// newerSchemaError is the refusal of a catalog written by a newer ferry.
func newerSchemaError(have, known int) error {
	return fmt.Errorf("schema version %d was written by a newer ferry; this ferry knows versions up to %d (upgrade ferry to use this catalog): %w",
		have, known, errdefs.ErrFailedPrecondition)
}
