// Package catalog is ferry's embedded state: what ferry did (job sessions
// with their per-VM and per-disk results), what exists (replicas and their
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
// Only one process opens a catalog at a time: bbolt locks the file, and a
// second ferry gets an error naming the file after Options.Timeout instead
// of waiting forever. Inside a process a Catalog is safe for concurrent use.
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
