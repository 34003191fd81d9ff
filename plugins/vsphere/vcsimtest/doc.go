// Package vcsimtest runs govmomi's vSphere simulator (vcsim) in the test
// process as a ferry test site, and fills the simulator's gaps the way
// research/vcsim.md describes: a hook around snapshot removal that avoids
// its two bugs, frozen point-in-time copies of each disk at every snapshot,
// and a changed block tracking double that answers QueryChangedDiskAreas
// with the real extents of the writes made through Site.Write. For the
// HotAdd transport it adds proxy VMs whose guest is faked (vcsim has no
// guest kernel): a fake udev shows each disk attached to a proxy as a
// wwn-0x<UUID> link to the disk's flat file; optional delta chains give
// snapshots of a VM with other snapshots a parent disk, as ESXi does.
//
// A Site is one simulated vCenter with a datacenter, a cluster of three
// hosts, a standalone host and a datastore whose files are local (the
// "mount" a proxy with direct storage access would have). Tests create VMs
// with small disks, put them in folders and tag them (the simulator's
// Automation API), write to them as a guest would, and point the vsphere
// plugin at the site's URL over verified TLS. StartESX starts a standalone
// ESXi host instead, which has no Automation API and so no tags.
//
// Tests use it through the helpers that take a testing.TB (Start,
// CreateVM, Write, ...); the lab (package lab, the ferry-lab-vsphere
// command behind `ferry lab`) uses New, AddVM, GuestWrite and DiskSizes,
// which return errors instead. Nothing else may import it: it never
// changes the plugin's behaviour, only the simulated vCenter's, and
// scripts/check-layering.sh keeps the simulator out of every
// ferry-plugin-* binary.
package vcsimtest
