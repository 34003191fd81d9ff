package config

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// ReplicaMapping names a VM the target already has (restored from a backup,
// an old copy, a seed) as the replica of a VM of the job: the first run
// compares the two block by block and sends only what differs.
type ReplicaMapping struct {
	VM      string // the entry of vms it maps, as written there
	Replica string // the name of the VM on the target

	DeclRange hcl.Range
}

var replicaMappingSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "vm", Required: true},
	{Name: "replica", Required: true},
}}

// replicaMapping decodes a replica_mapping block. vmSeen and replicaSeen
// hold where each VM and each replica was mapped before.
func (l *loader) replicaMapping(j *Job, b *hcl.Block, vmSeen, replicaSeen map[string]hcl.Range) (ReplicaMapping, bool) {
	m := ReplicaMapping{DeclRange: b.DefRange}
	content, diags := b.Body.Content(replicaMappingSchema)
	l.diags = append(l.diags, diags...)
	ok := !diags.HasErrors()
	if a, present := content.Attributes["vm"]; present {
		s, good := evalString(a, l.ctx, &l.diags)
		switch {
		case !good:
			ok = false
		case !j.hasEntry(s):
			l.errorf(a.Expr.Range(), "Mapping of a VM the job does not name",
				"Job %q maps %q, which its vms list does not name one by one. A replica_mapping names an entry of vms as written there.%s", j.Name, s, didYouMean(s, j.VMs))
			ok = false
		default:
			if first, dup := vmSeen[s]; dup {
				l.errorf(a.Expr.Range(), "Duplicate replica mapping", "VM %q is already mapped at %s; a VM has one replica.", s, first)
				ok = false
			} else {
				vmSeen[s] = a.Expr.Range()
			}
		}
		m.VM = s
	}
	if a, present := content.Attributes["replica"]; present {
		s, good := evalString(a, l.ctx, &l.diags)
		switch {
		case !good:
			ok = false
		case strings.TrimSpace(s) == "":
			l.errorf(a.Expr.Range(), "Invalid replica name", "The replica a VM is mapped onto must be named.")
			ok = false
		case badSuffix(s) != "":
			l.errorf(a.Expr.Range(), "Invalid replica name", "Replica name %q %s; it must be safe as a file or folder name on every target.", s, badSuffix(s))
			ok = false
		default:
			if first, dup := replicaSeen[s]; dup {
				l.errorf(a.Expr.Range(), "Duplicate replica mapping", "VM %q of the target is already mapped at %s; one replica serves one VM.", s, first)
				ok = false
			} else {
				replicaSeen[s] = a.Expr.Range()
			}
		}
		m.Replica = s
	}
	return m, ok
}

// hasEntry reports whether vms names entry one by one.
func (j *Job) hasEntry(entry string) bool {
	for _, v := range j.VMs {
		if v == entry {
			return true
		}
	}
	return false
}

// Mapped returns the VM of the target that a job's replica_mapping names
// for entry, and whether there is one.
func (j *Job) Mapped(entry string) (string, bool) {
	for _, m := range j.ReplicaMappings {
		if m.VM == entry {
			return m.Replica, true
		}
	}
	return "", false
}

// checkMappings refuses replica mappings a target cannot make.
func (l *loader) checkMappings(j *Job) {
	if len(j.ReplicaMappings) == 0 || j.Target == nil || j.Target.Info == nil || j.Target.Info.Capabilities.MapReplicas {
		return
	}
	l.errorf(j.ReplicaMappings[0].DeclRange, "Replica mapping not supported",
		"Job %q maps VMs onto existing ones, but %s (type %q) cannot make a VM it has a replica. Remove the replica_mapping blocks, or use a target that can.",
		j.Name, j.Target.Address(), j.Target.Type)
}

func (m ReplicaMapping) String() string { return fmt.Sprintf("%s -> %s", m.VM, m.Replica) }
