package hyperv

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// A replica keeps what ferry knows of it in its VM's notes, and a restore
// point in its checkpoint's notes, so the host holds everything and the
// plugin keeps no state of its own: a JSON object after a first line that
// tells a person reading the notes in Hyper-V Manager what they are.
const notesHeader = "ferry replica: managed by ferry-plugin-hyperv; do not edit\n"

// replicaMeta is what a replica VM's notes hold.
type replicaMeta struct {
	Replica       int              `json:"ferry_replica"` // 1
	Owner         sdk.ReplicaOwner `json:"owner"`
	SourceVM      string           `json:"source_vm"`
	Incarnation   string           `json:"incarnation"`
	State         sdk.ReplicaState `json:"state"`
	FailoverPoint string           `json:"failover_point,omitempty"`
	// Undo is the checkpoint a failover took of the replica's working
	// state, which UndoFailover applies again.
	Undo string `json:"undo,omitempty"`
	// Sizes are the disks' sizes, which VHDX rounds up to whole sectors.
	Sizes []int64 `json:"sizes"`
	// NICs are the replica's adapters as created (networks mapped, the
	// source's addresses): failover and ApplyNetwork apply their rules to
	// these.
	NICs []sdk.NIC `json:"nics"`
	// Before are the adapters' settings before a failover, which
	// UndoFailover restores.
	Before  []sdk.NIC `json:"before,omitempty"`
	GuestOS string    `json:"guest_os,omitempty"`
	// Marks are the reference points of the failback marks taken of the
	// failed-over replica (failback_read.go), which its failover's undo
	// or commit removes.
	Marks []string `json:"failback_marks,omitempty"`
}

func (m *replicaMeta) notes() (string, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	return notesHeader + string(b), nil
}

// parseReplica reads a VM's notes; ok is false for a VM that is not a
// ferry replica.
func parseReplica(notes string) (*replicaMeta, bool, error) {
	body, ok := strings.CutPrefix(notes, notesHeader)
	if !ok {
		return nil, false, nil
	}
	var m replicaMeta
	if err := json.Unmarshal([]byte(body), &m); err != nil || m.Replica != 1 {
		return nil, true, fmt.Errorf("the notes of a ferry replica do not parse (edited by hand?): %v: %w", err, errdefs.ErrDataLoss)
	}
	return &m, true, nil
}

// pointMeta is what a restore point's checkpoint notes hold.
type pointMeta struct {
	Point  int               `json:"ferry_point,omitempty"` // 1 for a restore point
	Undo   int               `json:"ferry_undo,omitempty"`  // 1 for a failover's undo checkpoint
	Labels map[string]string `json:"labels,omitempty"`
	Sizes  []int64           `json:"sizes"`
}

func (m *pointMeta) notes() (string, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	return notesHeader + string(b), nil
}

func parsePoint(notes string) (*pointMeta, bool) {
	body, ok := strings.CutPrefix(notes, notesHeader)
	if !ok {
		return nil, false
	}
	var m pointMeta
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		return nil, false
	}
	return &m, true
}

func newIncarnation() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
