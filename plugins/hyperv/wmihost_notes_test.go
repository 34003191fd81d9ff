package hyperv

import (
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/plugins/hyperv/wmihost"
)

// The Windows backend refuses change tracking on ferry's replicas by
// their notes; it must recognise the notes the plugin writes.
func TestReplicaNotesPrefix(t *testing.T) {
	if !strings.HasPrefix(notesHeader, wmihost.ReplicaNotesPrefix) {
		t.Fatalf("notes header %q does not start with wmihost.ReplicaNotesPrefix %q", notesHeader, wmihost.ReplicaNotesPrefix)
	}
}

// Nor may it answer change tracking for a VM a failback wrote: it must
// recognise the marker the failback puts in the VM's notes.
func TestFailbackNotesMarker(t *testing.T) {
	if !strings.HasPrefix(failbackHeader, wmihost.FailbackNotesMarker) {
		t.Fatalf("failback header %q does not start with wmihost.FailbackNotesMarker %q", failbackHeader, wmihost.FailbackNotesMarker)
	}
}
