package e2e

import (
	"testing"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
)

// plainVM makes a powered-off VM on a site that is no replica, one NIC on
// "VM Network" and a disk holding each of disks, as a restore from a
// backup leaves one.
func plainVM(t *testing.T, s *vcsimtest.Site, name string, disks [][]byte) {
	t.Helper()
	sizes := make([]int64, len(disks))
	for i, d := range disks {
		sizes[i] = int64(len(d))
	}
	s.CreateVM(t, vcsimtest.VMSpec{Name: name, Disks: sizes, NICs: []vcsimtest.NICSpec{{Network: "VM Network"}}})
	for i, d := range disks {
		s.WriteUntracked(t, name, i, 0, d)
	}
}
