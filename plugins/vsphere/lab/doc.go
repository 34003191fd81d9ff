// Package lab is `ferry lab`: a local two-site vSphere lab on govmomi's
// simulator, for trying ferry without a vCenter; and, with `up --dr
// hyperv`, the mixed lab, whose dr site is the Hyper-V plugin's simulated
// host (plugins/hyperv/simhost), for seeing a VMware VM fail over onto
// Hyper-V (mixed.go). The ferry-lab-vsphere
// command runs it; `ferry lab` finds that command and hands it its
// arguments, because ferry's core never imports a plugin.
//
// `up` starts a server process of its own, detached from the terminal,
// that runs two simulated vCenters (prod and dr, through vcsimtest with
// its gap fillers: frozen snapshot copies, a changed block tracking
// double, the snapshot-removal hook), creates a few powered-on VMs whose
// disks hold generated disk-like data, and writes a configuration folder
// for them (a vsphere source verified by CA file, a vsphere target pinned
// by thumbprint, a local repository, a job with a network map and re-IP
// rules) and a state file. The other verbs talk to that server over a
// unix socket, because the change tracking double lives in its memory:
// `write` makes guest writes, `status` lists the sites' VMs as the
// simulators report them, `verify` compares a prod VM's disks with its
// replica's byte for byte, `down` stops it and removes what `up` made.
// The mixed lab's simulated Hyper-V host is a folder (sites/hyperv-dr)
// that the hyperv plugin and the server share; it has no process.
//
// The lab folder (DIR, ~/.ferry/lab by default) holds lab.json (the
// state), lab.sock (the control socket), lab.log (the server's log),
// config/ (the configuration, and ferry's catalog in config/.ferry),
// repository/ and sites/ (the simulated datastores). Nothing else in DIR
// is ever touched.
//
// The lab is a toy on purpose: it must never be imported by the vsphere
// plugin itself or by ferry's core, never listen on anything but loopback
// and its unix socket, and never delete a file outside the names above.
// It runs on Unix only (a detached session, a unix socket, the local
// repository plugin).
package lab
