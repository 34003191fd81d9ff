package lab

// What the lab builds: the VMs of its prod site, the networks, and the
// job of its configuration.

const (
	jobName    = "lab"
	username   = "administrator@vsphere.local"
	prodNet    = "VM Network" // where the prod VMs are (vcsim's default network)
	drNet      = "DR Network" // what the network map moves them to
	fromSubnet = "10.1.0.0/16"
	toSubnet   = "10.2.0.0/16"
	prodGW     = "10.1.0.1"
	prodDNS    = "10.1.0.53"
	drGW       = "10.2.0.1"
	drDNS      = "10.2.0.53"

	// drSwitch is the mixed lab's Hyper-V virtual switch, what the
	// network map moves the prod VMs to.
	drSwitch = "DR Switch"
	// replicaSuffix names a replica after its VM: the job's default, which
	// the lab's configurations keep.
	replicaSuffix = "_replica"

	// cbtWindow is how much of a disk one QueryChangedDiskAreas answer
	// covers, so ferry asks in a loop as it does on ESXi.
	cbtWindow = 16 << 20
)

// labVM is a production VM of the lab.
type labVM struct {
	name     string
	cpus     int32
	memoryMB int32
	disks    []int64 // capacities
	ip       string  // on prodNet, CIDR
	// The virtual hardware, by vcsimtest's names; "" for its defaults
	// (BIOS, otherLinux64Guest, pvscsi, vmxnet3).
	firmware, guestID, scsiModel, nicModel string
}

// labVMs are small enough for `make demo` to replicate them in seconds on
// two cores, big enough for incremental runs to show.
var labVMs = []labVM{
	{name: "web-01", cpus: 2, memoryMB: 2048, disks: []int64{64 << 20, 16 << 20}, ip: "10.1.0.11/24"},
	{name: "web-02", cpus: 2, memoryMB: 2048, disks: []int64{48 << 20}, ip: "10.1.0.12/24"},
	{name: "db-01", cpus: 4, memoryMB: 8192, disks: []int64{96 << 20}, ip: "10.1.0.21/24"},
}

// mixedVMs are the prod VMs of the mixed lab, whose dr site is a
// simulated Hyper-V host: one VM of each firmware, so that the plan shows
// both mappings (a BIOS Linux guest on paravirtual SCSI becomes a
// generation 1 VM booting from IDE; an EFI Windows guest on LSI Logic SAS
// becomes generation 2 on synthetic SCSI). Smaller than labVMs: `make
// demo` runs this lab too.
var mixedVMs = []labVM{
	{name: "web-01", cpus: 2, memoryMB: 2048, disks: []int64{32 << 20, 8 << 20}, ip: "10.1.0.11/24",
		firmware: "bios", guestID: "ubuntu64Guest"},
	{name: "app-01", cpus: 2, memoryMB: 4096, disks: []int64{32 << 20}, ip: "10.1.0.12/24",
		firmware: "efi", guestID: "windows2019srv_64Guest", scsiModel: "lsilogic-sas", nicModel: "e1000e"},
}

// The kinds of dr site a lab has (ferry lab up --dr).
const (
	drVSphere = "vsphere" // a second simulated vCenter
	drHyperV  = "hyperv"  // a simulated Hyper-V host (plugins/hyperv/simhost)
)

// vmsOf are the prod VMs of a lab whose dr site is of kind dr.
func vmsOf(dr string) []labVM {
	if dr == drHyperV {
		return mixedVMs
	}
	return labVMs
}

func vmNames(vms []labVM) []string {
	names := make([]string, len(vms))
	for i, vm := range vms {
		names[i] = vm.name
	}
	return names
}
