// Package engine runs replication sessions: for each VM of a job it takes a
// source snapshot, finds what changed, moves the changed blocks of every
// disk to the replica, and commits in a fixed order — the target's restore
// point first, then the catalog, then the source snapshot is removed — and
// finally applies retention. After a first pass over the job's VMs, it
// tries again, within the session and after the job's retry wait, the VMs
// whose attempt failed with an error that waiting may cure (Retryable);
// its errors keep the class of their cause (errdefs) for that rule.
//
// Invariants it keeps (and its tests kill processes to prove):
//   - a restore point exists only when complete; a failed or killed run
//     leaves every earlier point intact;
//   - the repository's metadata never claims more than the replica holds
//     (see package replicameta), so the next run never needs a full copy;
//   - snapshots a killed run left behind are removed by the next run.
//
// What a session does with each VM is not decided here: at the start of
// each attempt the engine reads what the catalog, the source and the
// target say and calls package plan's Decide, the function `ferry plan`
// answers by (Plan gathers the same facts), then executes the decision.
// What it learns while moving a disk (tracking switched off, a change id
// reset) is recorded in the decision as a fallback, and the session keeps
// it with the disk.
//
// The engine holds policy (what to copy, when to commit, what to keep). It
// never moves bytes itself (package datamover does) and never talks to a
// plugin process directly: components come through the Components
// interface, and its records go to a Catalog it declares (core/catalog's
// bbolt file is one), so another store can slot in.
//
// Besides sessions (Run), it holds the use cases a CLI and ferry server
// share: Source and Target (a job's components, reached as its sessions
// reach them: on proxies when it runs on proxies), Failover, and replica
// seeding (SeedExport and SeedImport: a job's first copy carried in a
// folder, each image checked against the digests of what was read).
package engine
