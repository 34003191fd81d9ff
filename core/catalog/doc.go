// Package catalog is ferry's embedded state: what ferry did (job sessions
// with their per-VM and per-disk results, the results of test failovers of
// plans and VMs, the newest KeepTestResults of each), what exists (replicas and their
// restore points) and what each job last ran with (its settings fingerprint).
// `ferry status`, `ferry points`, `ferry plan` and the replication engine
// read it; the engine writes it.
//
// The catalog is one bbolt file, by default .ferry/catalog.db beside the
// configuration (DefaultPath). Every change is one bbolt transaction, written
// and synced before the call returns, so a process killed in the middle of a
// write leaves the previous state intact. Update groups several changes into
// one transaction; the engine commits a VM (replica, new restore point,
// session result) that way.
//
// Many processes use one catalog at once (a run, a run of another job,
// `ferry status`): a Catalog opens the file only for the span of each
// transaction, read-only with a shared lock to read and with bbolt's
// exclusive lock to write, so nobody holds it between transactions. A
// process that waits longer than Options.Timeout for the others'
// transactions gets an error naming the file instead of waiting forever.
// Inside a process a Catalog is safe for concurrent use.
//
// One session of a job runs at a time: BeginSession takes a lock of the
// job's own (a file in <catalog>.running) that the session keeps until it
// ends, and the operating system drops when its process dies. A second
// session of the job is refused while the lock is held; MarkAbandoned
// fails the sessions left "running" whose lock nobody holds. A ferry
// server claims all the jobs of its catalog (ClaimControl, a lock of the
// same kind): while it runs, only its Catalog begins sessions. A command
// that changes a job's VMs outside a session (a failback) holds the
// job's lock while it runs (HoldJobs), with a file naming it, so that a
// session refused, or a second such command, says who holds the job.
//
// A damaged file (one bbolt cannot decode, a record that is not JSON, a
// page pointing outside the file) gives an error matching ErrDamaged that
// says what to do, never a crash: reads of the memory-mapped file run with
// faults turned into panics (debug.SetPanicOnFault), and the panics of
// bbolt on such pages are recovered into that error.
//
// The file carries a schema version in its meta bucket. Open applies the
// migrations this build knows, in order, each in its own transaction, and
// refuses, without opening it for writing, a catalog written by a newer
// ferry.
//
// This package must never decide anything: it stores and returns records
// and checks that they are well formed, while what to replicate, what to
// keep and what to delete is decided by the engine and retention. It never
// talks to plugins and never imports them; the catalog records what a
// target reported, it does not ask the target.
package catalog
