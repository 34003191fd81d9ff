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
