package simhost

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/plugins/internal/filelock"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Host is a simulated Hyper-V host kept in a folder.
type Host struct {
	dir string
	// now is the clock; tests may replace it.
	now func() time.Time
	// step, when set, is called at the named steps of a change (tests kill
	// the process there to prove crash safety). Nil in the plugin.
	step func(name string)
	// cluster and node, when set, make this host one node of a simulated
	// cluster (see Cluster): it sees the VMs registered on it alone, and
	// answers ErrUnavailable while the node is down.
	cluster *Cluster
	node    string
}

var _ host.Host = (*Host)(nil)

// blockSize is the VHDX block size of the disks the simulated host
// creates: 1 MiB keeps small test disks small (Hyper-V's default is 32 MiB).
const blockSize = 1 << 20

type hostConfig struct {
	Switches []string `json:"switches"`
}

// Open opens the simulated host in dir, creating it (with the switches
// named, when it is new) if it does not exist.
func Open(dir string, switches ...string) (*Host, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("simulated host %q: %w", dir, err)
	}
	h := &Host{dir: abs, now: time.Now}
	if err := os.MkdirAll(filepath.Join(abs, "vms"), 0o755); err != nil {
		return nil, fmt.Errorf("simulated host %q: %w", dir, err)
	}
	if _, err := os.Stat(h.configPath()); errors.Is(err, fs.ErrNotExist) {
		if err := writeJSONAtomic(h.configPath(), hostConfig{Switches: slices.Clone(switches)}); err != nil {
			return nil, fmt.Errorf("simulated host %q: %w", dir, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("simulated host %q: %w", dir, err)
	}
	return h, nil
}

func (h *Host) configPath() string { return filepath.Join(h.dir, "host.json") }

// Dir is the host's folder.
func (h *Host) Dir() string { return h.dir }

// Name is "sim:" and the folder.
func (h *Host) Name() string { return "sim:" + h.dir }

// Local is true: the files are in the host's folder.
func (h *Host) Local() bool { return true }

func (h *Host) lock(ctx context.Context) (*filelock.Lock, error) {
	if err := h.gate(); err != nil {
		return nil, err
	}
	return filelock.Acquire(ctx, filepath.Join(h.dir, ".lock"))
}

// gate refuses every call to a node of a simulated cluster while the node
// is down, as an unreachable host would.
func (h *Host) gate() error {
	if h.cluster == nil {
		return nil
	}
	return h.cluster.reachable(h.node)
}

// sees reports whether the VM is this host's: on a cluster node, one
// registered on the node.
func (h *Host) sees(s *vmState) bool { return h.cluster == nil || s.Node == h.node }

func (h *Host) hit(step string) {
	if h.step != nil {
		h.step(step)
	}
}

// Switches lists the virtual switches.
func (h *Host) Switches(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := h.gate(); err != nil {
		return nil, err
	}
	var c hostConfig
	if err := readJSON(h.configPath(), &c); err != nil {
		return nil, err
	}
	return c.Switches, nil
}

// AddSwitch adds a virtual switch.
func (h *Host) AddSwitch(ctx context.Context, name string) error {
	l, err := h.lock(ctx)
	if err != nil {
		return err
	}
	defer l.Release()
	var c hostConfig
	if err := readJSON(h.configPath(), &c); err != nil {
		return err
	}
	if !slices.Contains(c.Switches, name) {
		c.Switches = append(c.Switches, name)
	}
	return writeJSONAtomic(h.configPath(), c)
}

// vmState is a VM's vm.json.
type vmState struct {
	ID          string             `json:"id"`
	Name        string             `json:"name"`
	Created     time.Time          `json:"created"`
	Generation  int                `json:"generation"`
	CPUs        int                `json:"cpus"`
	MemoryMiB   int64              `json:"memory_mib"`
	SecureBoot  bool               `json:"secure_boot"`
	SBTemplate  string             `json:"secure_boot_template,omitempty"`
	TPM         bool               `json:"tpm"`
	Running     bool               `json:"running"`
	GuestBackup bool               `json:"guest_backup"`
	Notes       string             `json:"notes,omitempty"`
	Disks       []diskState        `json:"disks"`
	NICs        []host.NIC         `json:"nics,omitempty"`
	Checkpoints []checkpointState  `json:"checkpoints,omitempty"`
	RefPoints   []refPointState    `json:"reference_points,omitempty"`
	Files       map[string]fileRec `json:"files"` // every disk file of the VM, by name
	// Node is the cluster node the VM is registered on ("" on a host of
	// its own); Clustered makes it a highly available role of the
	// cluster, which moves to another node when its node goes down.
	Node      string `json:"node,omitempty"`
	Clustered bool   `json:"clustered,omitempty"`
	// BootOrder is the firmware's boot order (bootorder.go).
	BootOrder []host.BootDevice `json:"boot_order,omitempty"`
}

type diskState struct {
	Controller string     `json:"controller"`
	Bus        int        `json:"bus"`
	Location   int        `json:"location"`
	File       string     `json:"file"`  // the current file
	Epoch      string     `json:"epoch"` // change tracking's epoch
	Seq        int        `json:"seq"`
	Log        []rctEntry `json:"rct_log,omitempty"`
}

// fileRec is one disk file: which disk, its parent file, and the change
// tracking ids its writes start and (once frozen) end at.
type fileRec struct {
	Disk   int    `json:"disk"`
	Parent string `json:"parent,omitempty"`
	Start  string `json:"start,omitempty"`
	End    string `json:"end,omitempty"`
}

// rctEntry keeps the changes between two ids of files that were merged.
type rctEntry struct {
	From    string        `json:"from"`
	To      string        `json:"to"`
	Extents []host.Extent `json:"extents"`
}

// maxLog bounds each disk's change log; older ids then reset.
const maxLog = 64

type checkpointState struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Type        int       `json:"type"`
	Created     time.Time `json:"created"`
	Consistency int       `json:"consistency"`
	Notes       string    `json:"notes,omitempty"`
	Parent      string    `json:"parent,omitempty"`
	Files       []string  `json:"files"`
	RCT         []string  `json:"rct"`
	Sizes       []int64   `json:"sizes"`
}

type refPointState struct {
	ID          string    `json:"id"`
	Checkpoint  string    `json:"checkpoint"`
	Created     time.Time `json:"created"`
	Consistency int       `json:"consistency"`
	RCT         []string  `json:"rct"`
}

func (h *Host) vmDir(id string) string { return filepath.Join(h.dir, "vms", id) }

func (h *Host) readVM(id string) (*vmState, error) {
	var s vmState
	if err := readJSON(filepath.Join(h.vmDir(id), "vm.json"), &s); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("vm %q: %w", id, errdefs.ErrNotFound)
		}
		return nil, err
	}
	return &s, nil
}

func (h *Host) writeVM(s *vmState) error {
	return writeJSONAtomic(filepath.Join(h.vmDir(s.ID), "vm.json"), s)
}

// find returns the state of a VM by id or name.
func (h *Host) find(vm string) (*vmState, error) {
	if err := h.gate(); err != nil {
		return nil, err
	}
	if validID(vm) {
		s, err := h.readVM(vm)
		if err == nil && !h.sees(s) {
			return nil, fmt.Errorf("vm %q is registered on node %s, not %s: %w", vm, s.Node, h.node, errdefs.ErrNotFound)
		}
		if err == nil || !errors.Is(err, errdefs.ErrNotFound) {
			return s, err
		}
	}
	all, err := h.all()
	if err != nil {
		return nil, err
	}
	for _, s := range all {
		if s.Name == vm {
			return s, nil
		}
	}
	return nil, fmt.Errorf("vm %q: %w", vm, errdefs.ErrNotFound)
}

// validID keeps a name with separators from being taken for a folder.
func validID(s string) bool {
	return s != "" && !strings.ContainsAny(s, `/\.`)
}

func (h *Host) all() ([]*vmState, error) {
	entries, err := os.ReadDir(filepath.Join(h.dir, "vms"))
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	var out []*vmState
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		s, err := h.readVM(e.Name())
		if errors.Is(err, errdefs.ErrNotFound) {
			continue // a VM being created or deleted
		}
		if err != nil {
			return nil, err
		}
		if h.sees(s) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// ListVMs lists every VM, oldest first.
func (h *Host) ListVMs(ctx context.Context) ([]host.VM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := h.gate(); err != nil {
		return nil, err
	}
	all, err := h.all()
	if err != nil {
		return nil, err
	}
	out := make([]host.VM, 0, len(all))
	for _, s := range all {
		v, err := h.describe(s)
		if err != nil {
			return nil, err
		}
		out = append(out, *v)
	}
	return out, nil
}

// GetVM returns a VM by id or name.
func (h *Host) GetVM(ctx context.Context, vm string) (*host.VM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := h.find(vm)
	if err != nil {
		return nil, err
	}
	return h.describe(s)
}

func (h *Host) describe(s *vmState) (*host.VM, error) {
	v := &host.VM{ID: s.ID, Name: s.Name, Generation: s.Generation, CPUs: s.CPUs, MemoryMiB: s.MemoryMiB,
		SecureBoot: s.SecureBoot, SecureBootTemplate: s.SBTemplate, TPM: s.TPM, Running: s.Running, GuestBackup: s.GuestBackup, Notes: s.Notes,
		Dir: h.vmDir(s.ID), Clustered: s.Clustered, BootOrder: slices.Clone(s.BootOrder)}
	for _, d := range s.Disks {
		p := filepath.Join(v.Dir, d.File)
		size, err := diskSize(p)
		if err != nil {
			return nil, err
		}
		v.Disks = append(v.Disks, host.Disk{Controller: d.Controller, Bus: d.Bus, Location: d.Location, Path: p, Capacity: size})
	}
	for _, n := range s.NICs {
		n.Guest.Addresses = slices.Clone(n.Guest.Addresses)
		n.Guest.DNS = slices.Clone(n.Guest.DNS)
		v.NICs = append(v.NICs, n)
	}
	return v, nil
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return strings.ToUpper(h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:])
}

func newEpoch() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// change runs fn on the VM's state under the host's lock, after sweeping
// what an interrupted change left, and commits the state fn leaves when
// it returns nil. Then it removes the files the new state no longer names.
func (h *Host) change(ctx context.Context, vm string, fn func(s *vmState) error) (*vmState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, err := h.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	s, err := h.find(vm)
	if err != nil {
		return nil, err
	}
	h.sweep(s)
	if err := fn(s); err != nil {
		h.sweep(s) // the files fn made are not committed
		return nil, err
	}
	if err := h.writeVM(s); err != nil {
		return nil, err
	}
	h.hit("committed")
	h.sweep(s)
	return s, nil
}

// sweep removes the disk files of the VM's folder that its state does not
// name: new files of a change that did not commit, or old files of one
// that did. A file that cannot be removed now (open elsewhere, on Windows)
// is swept by a later change.
func (h *Host) sweep(s *vmState) {
	dir := h.vmDir(s.ID)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if !strings.HasSuffix(n, ".vhdx") && !strings.HasSuffix(n, ".avhdx") {
			continue
		}
		if _, ok := s.Files[n]; !ok {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

// SetNotes replaces the VM's notes.
func (h *Host) SetNotes(ctx context.Context, vm, notes string) error {
	_, err := h.change(ctx, vm, func(s *vmState) error { s.Notes = notes; return nil })
	return err
}

// SetRunning starts or turns off the VM.
func (h *Host) SetRunning(ctx context.Context, vm string, running bool) error {
	_, err := h.change(ctx, vm, func(s *vmState) error { s.Running = running; return nil })
	return err
}

// SetGuestBackup enables or disables the guest's Backup (VSS) integration
// service, which decides whether checkpoints can be application-consistent.
func (h *Host) SetGuestBackup(ctx context.Context, vm string, on bool) error {
	_, err := h.change(ctx, vm, func(s *vmState) error { s.GuestBackup = on; return nil })
	return err
}

// ConnectNIC connects a network adapter to a switch of the host.
func (h *Host) ConnectNIC(ctx context.Context, vm string, nic int, vswitch string) error {
	switches, err := h.Switches(ctx)
	if err != nil {
		return err
	}
	if vswitch != "" && !slices.Contains(switches, vswitch) {
		return fmt.Errorf("connect vm %q adapter %d: virtual switch %q: %w", vm, nic, vswitch, errdefs.ErrNotFound)
	}
	_, err = h.change(ctx, vm, func(s *vmState) error {
		if nic < 0 || nic >= len(s.NICs) {
			return fmt.Errorf("vm %q has no network adapter %d: %w", vm, nic, errdefs.ErrNotFound)
		}
		s.NICs[nic].Switch = vswitch
		return nil
	})
	return err
}

// SetGuestNetwork records the guest's IP settings of an adapter.
func (h *Host) SetGuestNetwork(ctx context.Context, vm string, nic int, g host.GuestNetwork) error {
	_, err := h.change(ctx, vm, func(s *vmState) error {
		if nic < 0 || nic >= len(s.NICs) {
			return fmt.Errorf("vm %q has no network adapter %d: %w", vm, nic, errdefs.ErrNotFound)
		}
		s.NICs[nic].Guest = host.GuestNetwork{Addresses: slices.Clone(g.Addresses), Gateway: g.Gateway, DNS: slices.Clone(g.DNS)}
		return nil
	})
	return err
}

// DeleteVM removes the VM and every file of it.
func (h *Host) DeleteVM(ctx context.Context, vm string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l, err := h.lock(ctx)
	if err != nil {
		return err
	}
	defer l.Release()
	s, err := h.find(vm)
	if err != nil {
		return err
	}
	// vm.json goes first: a VM without it does not exist, and its folder
	// is only leftovers.
	dir := h.vmDir(s.ID)
	if err := os.Remove(filepath.Join(dir, "vm.json")); err != nil {
		return fmt.Errorf("delete vm %q: %w", vm, err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// writeJSONAtomic replaces path with v so that a reader, or a process
// after a crash, sees the old content or the new one.
func writeJSONAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.Write(append(data, '\n'))
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	return syncDir(dir)
}
