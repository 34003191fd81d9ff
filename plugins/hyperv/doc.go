// Package hyperv is ferry's Hyper-V plugin: a source that replicates a
// Hyper-V host's VMs (recovery checkpoints, Resilient Change Tracking,
// reference points) and a target that keeps replica VMs on a Hyper-V host,
// with their restore points as Hyper-V checkpoints, so the replica's own
// chain of VHDX and AVHDX files holds every point and ferry keeps no undo
// store of its own.
//
// Every call to Hyper-V goes through host.Host (package host); simhost
// implements it on any OS with folders and VHDX files; wmihost implements
// it on Windows through WMI, for the host the plugin runs on (host = ".";
// connect_windows.go). Other hosts, and anything but "sim:DIR" off
// Windows, are refused with errdefs.ErrUnimplemented. The plugin reads
// and writes the disks' files itself with
// sdk/disk/vhdx, so it runs on the Hyper-V host (beside a ferry proxy), or
// anywhere for the simulated host.
//
// source.go is the Source, target.go and failover.go the Target, disk.go
// the disk readers and writers, meta.go what a replica and a restore point
// record in their Hyper-V notes; failback.go is the Source's half of
// failback (a checkpoint of production as the undo store, a marker in its
// notes), failback_read.go the Target's (RCT marks of the running
// replica). It never calls WMI itself, and never writes a file a
// checkpoint holds: only the newest file of a disk's chain (a replica's,
// or a production VM's in failback, above its undo checkpoint), which no
// checkpoint has frozen, is opened for writing.
package hyperv
