// Package selection works out which VMs a run of a job replicates: the VMs
// the job names one by one, and those its folder and tag selectors pick
// from what the source lists now, less the excluded ones. The engine calls
// it at the start of every session and `ferry plan` before showing a plan,
// so both see the same VMs.
//
// Select is a pure function of what the source said and what the catalog
// knows; Resolve gathers what the source says (one ListVMs, one ListTags
// when a tag selector needs it, one DescribeVM per VM named one by one)
// and calls it.
//
// Each chosen VM has a key, the name the job, the catalog and the
// replica's name use, and a ref, what the source is asked about. A VM named
// one by one keeps the entry as written for both, as before selectors
// existed. A VM a selector picks keeps the key its replica has in the
// catalog (found by the VM's id, so a renamed or moved VM stays with its
// replica), or else takes its name; it is addressed by its id, so names
// that repeat elsewhere in the inventory do not matter. A VM picked twice
// is replicated once; an excluded VM never. Two VMs that would share a key
// (and so a replica) are refused, never merged.
//
// This package never changes anything, never talks to the catalog, and
// asks the source only what Resolve lists above.
package selection
