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
// The connection is mutual TLS 1.3 with a key pair for each side that the
// host makes for each start (NewHostTLS) and hands the plugin in the
// environment variable FERRY_PLUGIN_TLS. The sdk takes the variable out of
// the environment when it is initialised, before the plugin's main runs, so
// no process the plugin starts inherits its key. Started by a ferry that
// predates the variable, Serve falls back to go-plugin's automatic mutual
// TLS, as a plugin built with an older sdk does with a newer ferry.
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
