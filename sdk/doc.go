// Package sdk is what a ferry plugin is written with, and what the ferry host
// uses to talk to one.
//
// A plugin is a separate executable named ferry-plugin-<name>. It serves one
// or more components: a Source (reads VMs from a hypervisor), a Target (keeps
// replicas and their restore points), a Repository (keeps replica metadata).
// An author implements the Go interfaces in this package and calls Serve from
// main; the host starts the binary through HashiCorp go-plugin, negotiates
// protocol v1 (sdk/proto/ferry/plugin/v1) and calls it over gRPC. On the host
// side, Client returns the same Go interfaces backed by the remote process,
// so the core is written once against Source, Target and Repository.
//
// Disk data crosses the boundary in one of two lanes behind one API
// (DiskReader, DiskWriter): a gRPC stream of large chunks with offsets and
// CRC32C checksums, or, where a component offers it and the data is local, a
// path the host opens itself.
//
// Errors keep their class (sdk/errdefs) across the boundary. Plugins hold
// mechanism, never policy: what to copy, when, and how long to keep it is
// decided by the core.
//
// This module must never import anything of ferry outside sdk/, so plugin
// authors do not pull in the core's dependencies.
package sdk
