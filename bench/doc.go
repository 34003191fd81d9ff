// Package bench measures ferry side by side with the tools it must beat, in
// one run, and reports ratios (DESIGN.md §10): a full copy against
// cp --sparse=always, and 0.1%, 1% and 10% of scattered changes, with and
// without change tracking, against rsync --inplace --no-whole-file and
// against the floors of that work, measured by small programs of its own
// (floor.go): reading and hashing the whole disk, copying only the changed
// extents. A big sparse disk then shows how ferry's memory scales, and
// `ferry server` with 100 scheduled jobs how punctually it starts their
// sessions, its memory and its API's latency (server.go).
//
// It generates deterministic disk-like images (zeros, compressible text
// and random data in 4-64 KiB granules, thick or sparse: image.go,
// text.go) and scattered guest writes of new data (changes.go), makes
// tracked writes through the local plugin's own command-line entry
// in-process, runs ferry, its peers and the floors as child processes and
// measures their wall and CPU time and memory (measure.go), and checks the
// goals on the ratios (report.go).
//
// bench drives ferry the way an operator does: built binaries, an HCL
// configuration and `ferry run --json`. It must never be imported by
// ferry's own packages, and it never changes ferry to make a goal pass: a
// failed goal is reported, with the figures that explain it.
package bench
