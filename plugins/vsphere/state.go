package vsphere

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ferry-dr/ferry/sdk"
)

// The ferry folder of a replica sits in the replica VM's folder on its
// datastore:
//
//	<vm folder>/ferry/replica.json              the replica's state
//	<vm folder>/ferry/points/<id>/disk<N>.undo  the undo store of a restore point
//	<vm folder>/ferry/failover/disk<N>.undo     the working state's blocks a failover overwrote
//	<vm folder>/ferry/lock                      locked by the process working on the replica
//	<vm folder>/ferry/regrow.json               a disk growth under way
//
// A replica written through HotAdd has it under the target's state_dir
// instead, named after the replica's instance UUID.
const ferryDir = "ferry"

// replicaState is what ferry keeps about a replica beyond what vSphere
// holds: its place in the failover life and the network settings ferry
// means the guest to have (vSphere knows a NIC's network, not the guest's
// addresses).
type replicaState struct {
	Version    int              `json:"version"`
	Source     string           `json:"source"`
	State      sdk.ReplicaState `json:"state"`
	SourceNICs []sdk.NIC        `json:"source_nics"`
	NICs       []sdk.NIC        `json:"nics"`
	Failover   *failoverState   `json:"failover,omitempty"`
}

// failoverState is the journal of a failover: what to return to on undo.
type failoverState struct {
	Point          string    `json:"point"`
	SnapshotBefore string    `json:"snapshot_before,omitempty"`
	NICsBefore     []sdk.NIC `json:"nics_before"`
	PoweredOn      bool      `json:"powered_on"`
	// ChangeIDs are the replica's change ids, by disk, when it was
	// powered on: what failback asks its writes since (failback_target.go).
	ChangeIDs map[int]string `json:"change_ids,omitempty"`
}

func statePath(dir string) string { return filepath.Join(dir, "replica.json") }

// readState reads a replica's state; a replica whose state was never
// written (a crash right after its VM was created) is ready.
func readState(dir string) (*replicaState, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return &replicaState{Version: 1, State: sdk.ReplicaReady}, nil
	}
	if err != nil {
		return nil, err
	}
	var st replicaState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	if st.State == "" {
		st.State = sdk.ReplicaReady
	}
	return &st, nil
}

// writeState replaces the state atomically: a temporary file, fsync,
// rename, fsync of the folder.
func writeState(dir string, st *replicaState) error {
	st.Version = 1
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeFileAtomic(statePath(dir), b)
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

// syncDir makes a rename in dir durable where the system allows it.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func cloneNICs(nics []sdk.NIC) []sdk.NIC {
	out := make([]sdk.NIC, len(nics))
	for i, n := range nics {
		n.Addresses = append([]string(nil), n.Addresses...)
		n.DNS = append([]string(nil), n.DNS...)
		out[i] = n
	}
	return out
}
