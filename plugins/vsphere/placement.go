package vsphere

import (
	"fmt"
	"sort"
	"strings"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// hostCandidate is a host a replica could run on.
type hostCandidate struct {
	Name          string
	Ref           types.ManagedObjectReference
	VMs           int
	Connected     bool
	Maintenance   bool
	SeesDatastore bool
}

// pickHost chooses where a new replica goes in a cluster: among the hosts
// that are connected, not in maintenance mode and mount the datastore, the
// one with the fewest VMs; ties go to the first name, so the choice is
// stable. It says why when no host qualifies.
func pickHost(hosts []hostCandidate) (hostCandidate, error) {
	var ok []hostCandidate
	var why []string
	for _, h := range hosts {
		switch {
		case !h.Connected:
			why = append(why, h.Name+" is not connected")
		case h.Maintenance:
			why = append(why, h.Name+" is in maintenance mode")
		case !h.SeesDatastore:
			why = append(why, h.Name+" does not mount the datastore")
		default:
			ok = append(ok, h)
		}
	}
	if len(ok) == 0 {
		if len(hosts) == 0 {
			why = append(why, "it has no hosts")
		}
		return hostCandidate{}, fmt.Errorf("no host can take the replica: %s: %w", strings.Join(why, "; "), errdefs.ErrFailedPrecondition)
	}
	sort.SliceStable(ok, func(i, j int) bool {
		if ok[i].VMs != ok[j].VMs {
			return ok[i].VMs < ok[j].VMs
		}
		return ok[i].Name < ok[j].Name
	})
	return ok[0], nil
}
