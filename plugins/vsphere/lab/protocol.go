package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The control protocol between the lab's commands and its server: one
// JSON request and one JSON response per connection on the unix socket.
// Both ends are this package, built into one binary, so the protocol has
// no version of its own: lab.json has one.

// Operations of a request.
const (
	opPing   = "ping"   // is the server there? (its pid)
	opStatus = "status" // the sites and their VMs
	opWrite  = "write"  // guest writes into a prod VM
	opStop   = "stop"   // stop the sites and exit
	opVerify = "verify" // compare a prod VM's disks with its replica's
)

type request struct {
	Op    string `json:"op"`
	VM    string `json:"vm,omitempty"`
	Disk  int    `json:"disk"`            // -1: any disk of the VM
	Count int    `json:"count,omitempty"` // writes
}

type response struct {
	Error  string  `json:"error,omitempty"`
	Class  string  `json:"class,omitempty"` // the error's errdefs class
	PID    int     `json:"pid,omitempty"`
	Status *Status `json:"status,omitempty"`
	Writes []Write `json:"writes,omitempty"`
	Verify *Verify `json:"verify,omitempty"`
}

// Write is one guest write the lab made.
type Write struct {
	Disk   int   `json:"disk"`
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// Status is what `ferry lab status` shows: the lab and its sites' VMs as
// the simulator reports them.
type Status struct {
	Dir     string       `json:"dir"`
	PID     int          `json:"pid"`
	Started time.Time    `json:"started"`
	Config  string       `json:"config"`
	Sites   []SiteStatus `json:"sites"`
	// Problems are what went wrong inside the simulator's gap fillers
	// (a snapshot that could not be frozen, ...): a lab with problems no
	// longer behaves like vSphere.
	Problems []string `json:"problems,omitempty"`
}

// SiteStatus is one simulated site and its VMs, by name.
type SiteStatus struct {
	Name string `json:"name"`
	// Kind is "" for a simulated vCenter, siteHyperVSim for a simulated
	// Hyper-V host (URL is then "sim:DIR").
	Kind string     `json:"kind,omitempty"`
	URL  string     `json:"url"`
	VMs  []VMStatus `json:"vms"`
}

// VMStatus is a VM as the simulator reports it.
type VMStatus struct {
	Name string `json:"name"`
	// PowerState is vSphere's (poweredOn, poweredOff) or, on a simulated
	// Hyper-V host, Hyper-V's (Running, Off).
	PowerState string `json:"power_state"`
	// IPAddress is guest.ipAddress: the address VMware Tools report, set
	// by guest customization when a replica is re-IP'd at failover. On a
	// simulated Hyper-V host, the first address of the guest network
	// settings Hyper-V applies in the guest (set at failover too).
	IPAddress string      `json:"ip_address,omitempty"`
	NICs      []NICStatus `json:"nics"`
	Disks     []int64     `json:"disks"` // capacities in bytes
	// Snapshots are the VM's snapshots, or a Hyper-V VM's checkpoints.
	Snapshots int `json:"snapshots"`
	// Generation and BootOrder ("disk 0", "network 1") are a Hyper-V
	// VM's.
	Generation int      `json:"generation,omitempty"`
	BootOrder  []string `json:"boot_order,omitempty"`
}

// NICStatus is a NIC's network and the addresses its guest reports.
type NICStatus struct {
	Network   string   `json:"network"`
	Addresses []string `json:"addresses,omitempty"`
}

// errNotAnswering is a socket nobody serves.
var errNotAnswering = errors.New("the lab's server does not answer")

// ask sends one request to the server at socket and returns its response;
// an error the server reports is returned as an error.
func ask(ctx context.Context, socket string, req request) (*response, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, classf(errdefs.ErrUnavailable, "%w on %s: %v", errNotAnswering, socket, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, fmt.Errorf("send %s to the lab's server: %w", req.Op, err)
	}
	var resp response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, classf(errdefs.ErrUnavailable, "%w: %s: %v", errNotAnswering, req.Op, err)
	}
	if resp.Error != "" {
		err := errors.New(resp.Error)
		if class := errdefs.FromClass(resp.Class); class != nil {
			err = &classed{err: err, class: class}
		}
		return nil, err
	}
	return &resp, nil
}
