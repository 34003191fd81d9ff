package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/plugins/hyperv/simhost"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The mixed lab (ferry lab up --dr hyperv): prod is a simulated vCenter
// as in the two-vCenter lab; dr is a simulated Hyper-V host
// (plugins/hyperv/simhost), a folder of VMs with VHDX disks that the
// Hyper-V plugin drives with host = "sim:DIR". It is not Hyper-V, and the
// lab says so wherever it names it. It needs no process of its own: the
// plugin and the lab's server both work on its folder, whose lock
// serialises their changes.

// siteHyperVSim is SiteInfo.Kind and SiteStatus.Kind of a simulated
// Hyper-V host.
const siteHyperVSim = "hyperv-sim"

// renderMixedConfig writes the mixed lab's configuration: the prod site as
// a vsphere source verified by its certificate file, the simulated
// Hyper-V host as a hyperv target, a local repository, and a job with a
// network map (to the host's virtual switch), re-IP rules and a
// hardware_map.
func renderMixedConfig(in configInput) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	vms := make([]string, len(in.VMs))
	for i, vm := range in.VMs {
		vms[i] = hclString(vm)
	}
	p(`# The mixed ferry lab in %s, written by 'ferry lab up --dr hyperv':
# production is a simulated vCenter on this machine, disaster recovery a
# simulated Hyper-V host (a folder of VMs with VHDX disks, for tests and
# this lab; it is not Hyper-V). 'ferry lab down' stops the vCenter and
# removes this folder.
#
# The password is the lab's own, made up by 'ferry lab up'. A real
# configuration reads it from the environment: password = env("VSPHERE_PASSWORD").

# The production vCenter. Its certificate is verified with a CA file.
source "vsphere" "prod" {
  url        = %s
  username   = %s
  password   = %s
  ca_file    = %s
  datacenter = %s
  # Direct storage access: the simulated datastore is a folder here.
  local_datastore_paths = { %s = %s }
}

# The disaster-recovery Hyper-V host, simulated. A real one is
# host = "localhost" with ferry-plugin-hyperv running on it (see
# plugins/hyperv/README.md).
target "hyperv" "dr" {
  host = %s
}

# Replica metadata (block digests, change ids) near the source.
repository "local" "meta" { path = "../%s" }

job %s {
  source     = source.vsphere.prod
  target     = target.hyperv.dr
  repository = repository.local.meta
  vms        = [%s]
  schedule   = "every 15m"
  retention { restore_points = 7 }

  network_map {
    from = %s
    to   = %s
  }
  re_ip {
    from_subnet = %s
    to_subnet   = %s
    gateway     = %s
    dns         = [%s]
  }

  # Each replica's virtual hardware is mapped from its VM's (see
  # 'ferry plan'): the BIOS guest becomes a generation 1 VM booting from
  # IDE, the EFI guest generation 2 on synthetic SCSI. This asks for one
  # thing more: Secure Boot on app-01's replica (Windows' template).
  hardware_map {
    vm "app-01" {
      secure_boot = true
    }
  }
  transfer { compression = "auto" }
}
`,
		in.Dir,
		hclString(in.Prod.URL), hclString(in.Prod.Username), hclString(in.Password), hclString(in.Prod.CAFile), hclString(in.Prod.Datacenter),
		in.Prod.Datastore, hclString(in.Prod.DatastorePath),
		hclString(in.DR.URL),
		repoDir, hclString(jobName), strings.Join(vms, ", "),
		hclString(prodNet), hclString(drSwitch),
		hclString(fromSubnet), hclString(toSubnet), hclString(drGW), hclString(drDNS))
	return b.String()
}

// printMixedUp says what the mixed lab runs and what to type next.
func printMixedUp(w io.Writer, dir string, st *State) {
	fmt.Fprintf(w, "The mixed lab is up in %s (server pid %d, log %s).\n\n", dir, st.PID, filepath.Join(dir, logFile))
	var vms []string
	for _, vm := range mixedVMs {
		if slices.Contains(st.VMs, vm.name) {
			ip, _, _ := strings.Cut(vm.ip, "/")
			vms = append(vms, fmt.Sprintf("%s %s (%s)", vm.name, ip, strings.ToUpper(vm.firmware)))
		}
	}
	for _, s := range st.Sites {
		if s.Kind == siteHyperVSim {
			fmt.Fprintf(w, "  %-4s  %s  a simulated Hyper-V host (not Hyper-V); virtual switch %q\n", s.Name, s.URL, drSwitch)
			continue
		}
		fmt.Fprintf(w, "  %-4s  %s  a simulated vCenter; VMs %s, powered on, on %q\n", s.Name, s.URL, strings.Join(vms, ", "), prodNet)
	}
	cfg := st.Config
	fmt.Fprintf(w, "\nConfiguration: %s\n", filepath.Join(cfg, configFile))
	fmt.Fprintf(w, "  job %q replicates the VMware VMs onto Hyper-V; at failover it maps\n", st.Job)
	fmt.Fprintf(w, "  %q to %q and re-IPs %s to %s.\n\n", prodNet, drSwitch, fromSubnet, toSubnet)
	vm := st.VMs[0]
	printSteps(w, [][2]string{
		{ferryCommand(cfg, "plan"), "each replica's hardware against its VM's"},
		{ferryCommand(cfg, "run", st.Job), "the first run copies every allocated block into VHDX"},
		{labCommand(dir, "write", vm), vm + "'s guest changes some of its data"},
		{ferryCommand(cfg, "run", st.Job), "only the change crosses; a checkpoint per run"},
		{labCommand(dir, "verify", vm), vm + "'s replica holds its bytes"},
		{ferryCommand(cfg, "failover", st.Job, vm), vm + "'s replica starts on Hyper-V, re-IP'd"},
		{labCommand(dir, "status"), "the simulated host reports its new address"},
		{ferryCommand(cfg, "failover", "undo", st.Job, vm), "back to replication"},
		{labCommand(dir, "down"), "stop the lab and remove its files"},
	})
}

// hypervStatus lists the simulated Hyper-V host's VMs as its host
// interface reports them: running or off, the addresses of the guest
// network settings Hyper-V applies in a running guest (a replica re-IP'd
// at failover shows its new address), the generation, the boot order,
// disks and checkpoints.
func hypervStatus(ctx context.Context, h *simhost.Host) (SiteStatus, error) {
	out := SiteStatus{Name: "dr", Kind: siteHyperVSim, URL: h.Name(), VMs: []VMStatus{}}
	vms, err := h.ListVMs(ctx)
	if err != nil {
		return out, err
	}
	for _, v := range vms {
		st := VMStatus{Name: v.Name, PowerState: "Off", Generation: v.Generation, NICs: []NICStatus{}, Disks: []int64{}}
		if v.Running {
			st.PowerState = "Running"
		}
		for _, n := range v.NICs {
			ns := NICStatus{Network: n.Switch}
			// Hyper-V applies the guest network settings in a running
			// guest only; a stopped VM reports no address, as on vSphere.
			for _, a := range n.Guest.Addresses {
				if v.Running {
					ns.Addresses = append(ns.Addresses, addressOnly(a))
				}
			}
			if st.IPAddress == "" && len(ns.Addresses) > 0 {
				st.IPAddress = ns.Addresses[0]
			}
			st.NICs = append(st.NICs, ns)
		}
		for _, d := range v.Disks {
			st.Disks = append(st.Disks, d.Capacity)
		}
		for _, b := range v.BootOrder {
			st.BootOrder = append(st.BootOrder, b.String())
		}
		cps, err := h.ListCheckpoints(ctx, v.ID)
		if err != nil {
			return out, fmt.Errorf("vm %s: %w", v.Name, err)
		}
		st.Snapshots = len(cps)
		out.VMs = append(out.VMs, st)
	}
	return out, nil
}

// addressOnly drops the prefix length of "10.2.0.11/24", as VMware Tools
// report addresses.
func addressOnly(cidr string) string {
	if p, err := netip.ParsePrefix(cidr); err == nil {
		return p.Addr().String()
	}
	return cidr
}

// Verify is what `ferry lab verify` found: each disk of a prod VM against
// the same disk of its replica on dr, as each site holds it now.
type Verify struct {
	VM      string `json:"vm"`
	Replica string `json:"replica"`
	// Point is the checkpoint read on a simulated Hyper-V host.
	Point string       `json:"point,omitempty"`
	Disks []DiskVerify `json:"disks"`
}

// DiskVerify is one disk compared.
type DiskVerify struct {
	Disk   int    `json:"disk"`
	Size   int64  `json:"size"`
	Source string `json:"source_sha256"`
	// Replica is the SHA-256 of the replica's disk; on a simulated
	// Hyper-V host read through sdk/disk/vhdx from the top of its chain.
	Replica string `json:"replica_sha256"`
	// Chain are the VHDX files of the replica's disk, top first (for
	// another reader, such as libvhdi, to judge); empty on vSphere.
	Chain []string `json:"chain,omitempty"`
	Equal bool     `json:"equal"`
}

// verify compares each disk of prod VM vm with its replica's: on a
// simulated Hyper-V host, the newest restore point (the newest standard
// checkpoint, whose files the target wrote); on a simulated vCenter, the
// replica's disks as they are (the newest restore point, or the point a
// failover started it on: no guest writes into a lab's replica).
func (s *server) verify(ctx context.Context, vm string) (*Verify, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.knownVM(vm); err != nil {
		return nil, err
	}
	sizes, err := s.prod.DiskSizes(vm)
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", vm, err)
	}
	out := &Verify{VM: vm, Replica: vm + replicaSuffix}
	var point *host.Checkpoint
	if s.hv != nil {
		if point, err = newestPoint(ctx, s.hv, out.Replica); err != nil {
			return nil, fmt.Errorf("replica %q on the simulated Hyper-V host: %w (has 'ferry run' replicated %s yet?)", out.Replica, err, vm)
		}
		if len(point.Disks) != len(sizes) {
			return nil, classf(errdefs.ErrFailedPrecondition, "replica %q has %d disks, vm %q %d", out.Replica, len(point.Disks), vm, len(sizes))
		}
		out.Point = point.Name
	}
	for d, size := range sizes {
		dv := DiskVerify{Disk: d, Size: size}
		err := s.prod.ReadDisk(vm, d, func(r io.ReaderAt, n int64) error {
			dv.Source, err = digestOf(r, n)
			return err
		})
		if err != nil {
			return nil, err
		}
		if point != nil {
			dv.Replica, dv.Chain, err = vhdxDigest(point.Disks[d].Path, size)
		} else {
			err = s.dr.ReadDisk(out.Replica, d, func(r io.ReaderAt, n int64) error {
				dv.Replica, err = digestOf(r, n)
				return err
			})
		}
		if err != nil {
			return nil, fmt.Errorf("replica %q disk %d: %w (has 'ferry run' replicated %s yet?)", out.Replica, d, err, vm)
		}
		dv.Equal = dv.Source == dv.Replica
		out.Disks = append(out.Disks, dv)
	}
	return out, nil
}

// newestPoint is the newest standard checkpoint of a VM: its newest
// restore point.
func newestPoint(ctx context.Context, h *simhost.Host, vm string) (*host.Checkpoint, error) {
	cps, err := h.ListCheckpoints(ctx, vm)
	if err != nil {
		return nil, err
	}
	for i := len(cps) - 1; i >= 0; i-- {
		if cps[i].Type == host.Standard {
			return &cps[i], nil
		}
	}
	return nil, classf(errdefs.ErrNotFound, "vm %q has no restore point", vm)
}

// knownVM fails for a name that is not one of the lab's prod VMs.
func (s *server) knownVM(vm string) error {
	for _, v := range s.vms {
		if v.name == vm {
			return nil
		}
	}
	return classf(errdefs.ErrNotFound, "vm %q is not a VM of the lab's prod site (%s)", vm, strings.Join(vmNames(s.vms), ", "))
}

// vhdxDigest reads the first size bytes of a VHDX disk through its chain
// and returns their digest and the chain's files, top first. A disk
// smaller than size is an error: it cannot hold the source's bytes.
func vhdxDigest(path string, size int64) (string, []string, error) {
	img, err := vhdx.Open(path, os.O_RDONLY)
	if err != nil {
		return "", nil, err
	}
	defer img.Close()
	var chain []string
	for i := img; i != nil; i = i.Parent() {
		chain = append(chain, i.Path())
	}
	if img.Size() < size {
		return "", chain, fmt.Errorf("%s holds %d bytes, the source disk %d", path, img.Size(), size)
	}
	sum, err := digestOf(img, size)
	return sum, chain, err
}

// digestOf is the SHA-256 of the first size bytes of r; what lies past
// the end of a shorter file (a thin disk's flat file) reads as zeros.
func digestOf(r io.ReaderAt, size int64) (string, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		b := buf[:min(int64(len(buf)), size-off)]
		n, err := r.ReadAt(b, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		clear(b[n:])
		h.Write(b)
		off += int64(len(b))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
