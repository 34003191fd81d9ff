// Package hwmap decides the virtual hardware of a replica: it maps a
// source VM's hardware (firmware, Hyper-V generation, Secure Boot, TPM,
// each disk's controller, each NIC's model) onto what the job's target
// declares it builds, with the job's hardware_map over the defaults, and
// says why each thing changes. A mapping that cannot boot is refused with
// the reason.
//
// It is a pure function of the source's description, the target's
// declaration and the override: the engine passes its result to the
// target's CreateReplica and `ferry plan` shows its changes. It never
// calls a plugin, reads a clock or touches the catalog.
package hwmap
