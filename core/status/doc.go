// Package status is the status of a configuration's jobs, as `ferry
// status` prints it and `GET /v1/status` of ferry server answers it: each
// job's schedule and what runs it, its last session, and its VMs' replicas,
// restore points, last test failovers and failbacks under way, and each failover plan's last
// test, read from the catalog.
//
// It only reads the catalog: it never asks a plugin (the VMs a job's
// selectors picked are known by their replicas) and never changes
// anything. What runs a job at its schedule, and when next, is the
// caller's to say (a Scheduler).
package status
