// Package wmihost is the Hyper-V plugin's Windows backend: host.Host over
// WMI (root\virtualization\v2, through github.com/microsoft/wmi), for the
// Hyper-V host the plugin runs on. Remote hosts (DCOM) are out of scope:
// a ferry proxy runs on each Hyper-V host instead.
//
// The WMI calls live in the *_windows.go files and are kept thin; what
// they decide is in plain functions without a build tag (result.go:
// method return codes and jobs to errdefs classes; values.go: the host
// interface's arguments to WMI property values and WMI answers back;
// changes.go: Resilient Change Tracking answers), tested on any OS.
//
// Nothing here has run against a real Hyper-V host; the plugin's README
// says what was only compiled and what a maintainer must check on one.
//
// It must never destroy what the plugin did not ask for: it destroys a
// checkpoint, a reference point or a VM only when the Host method says
// so, and deletes only the disk files of a VM it is asked to delete.
// Change tracking it cannot vouch for is errdefs.ErrChangeIDReset, never
// a guess: a wrong answer there loses data silently, a reset costs only a
// comparison by digests.
package wmihost
