package config

import (
	"path"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// checkReplicaNames refuses two jobs that would write one replica: the VMs
// they name one by one meet under one replica name on one target. A
// replica belongs to one job, so the second job's runs would fail for the
// VM (or, before replicas had owners, overwrite the first job's replica).
// Entries given as an inventory path count by their last element, as the
// VM's name; ids and selectors are known only at run time, where the
// engine refuses a replica owned by another job.
func (l *loader) checkReplicaNames() {
	type use struct {
		job *Job
		vm  string
		rng hcl.Range
	}
	seen := map[string]use{} // target address NUL replica name -> first use
	names := make([]string, 0, len(l.cfg.Jobs))
	for name := range l.cfg.Jobs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		j := l.cfg.Jobs[name]
		if j.Target == nil {
			continue
		}
		for i, entry := range j.VMs {
			if i >= len(j.vmRanges) {
				break
			}
			vm := entry
			if strings.Contains(entry, "/") {
				vm = path.Base(entry)
			}
			k := j.Target.Address() + "\x00" + j.ReplicaName(entry, vm)
			first, ok := seen[k]
			if !ok {
				seen[k] = use{job: j, vm: entry, rng: j.vmRanges[i]}
				continue
			}
			if first.job == j {
				continue // one job naming a VM twice is reported at run time
			}
			l.errorf(j.vmRanges[i], "Two jobs write one replica",
				"Job %q replicates %q into replica %q on %s, and so does job %q (%q, at %s). A replica belongs to one job: give one of them another replica_suffix or another target.",
				j.Name, entry, j.ReplicaName(entry, vm), j.Target.Address(), first.job.Name, first.vm, first.rng.String())
		}
	}
}
