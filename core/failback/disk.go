package failback

// Disk modes of a sync.
const (
	ModeTracked = "change-tracking" // the changed areas both sides' tracking named
	ModeDigest  = "digest"          // every block of the replica compared with production's digests
	ModeFull    = "full"            // a production disk created empty: the replica's non-zero blocks
)

// DiskInput is what a sync knows of one disk before it moves it.
type DiskInput struct {
	// ReplicaKnown: the target said what the replica wrote since the last
	// completed sync (since the failover before the first).
	ReplicaKnown bool
	// Synced: a sync of this disk completed before, with a mark: the
	// production disk holds the replica's data as of that mark.
	Synced bool
	// ProductionKnown: production's change tracking said what changed
	// since the restore point the replica was failed over from.
	ProductionKnown bool
	// Created: the production VM was created empty by this failback.
	Created bool
}

// DiskPlan is how one disk is synced.
type DiskPlan struct {
	Mode string
	Why  string
	// ReplicaChanges and ProductionChanges: the areas to send are those
	// the replica's, and production's, change tracking named (their
	// union), read from the replica and sent without comparing.
	ReplicaChanges, ProductionChanges bool
	// CompareProduction: every block of the replica is read and compared
	// with production's digests, computed where production lives; only
	// the blocks that differ are sent.
	CompareProduction bool
}

// PlanDisk decides how a sync moves one disk: as little as change
// tracking can name, else by comparing digests, and a full copy only into
// a disk created empty (of which only the non-zero blocks are sent).
func PlanDisk(in DiskInput) DiskPlan {
	switch {
	case in.Synced && in.ReplicaKnown:
		return DiskPlan{Mode: ModeTracked, Why: "the replica's writes since the last sync", ReplicaChanges: true}
	case in.Created && !in.Synced:
		return DiskPlan{Mode: ModeFull, Why: "production's disk was created empty"}
	case !in.ReplicaKnown:
		return DiskPlan{Mode: ModeDigest, Why: "the replica's change tracking cannot say what it wrote", CompareProduction: true}
	case in.ProductionKnown:
		return DiskPlan{Mode: ModeTracked, Why: "the replica's writes since the failover and production's since the failover point", ReplicaChanges: true, ProductionChanges: true}
	}
	return DiskPlan{Mode: ModeDigest, Why: "production's change tracking cannot say what changed since the failover point", CompareProduction: true}
}
