#!/usr/bin/env bash
# The vSphere part of the demo (scripts/demo.sh runs it after the local
# one): `ferry lab up` starts two simulated vCenters with three VMs and
# writes a configuration; a full run, a guest write, an incremental run
# with changed block tracking, restore points, a failover whose replica the
# simulator reports with its re-IP'd address, an undo, `ferry lab down`.
# Every claim is checked; the lab is stopped at the end, even on failure.
# It needs only the binaries in bin/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:$PATH"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo-vsphere.XXXXXX")
lab=${DEMO_VSPHERE_DIR:-$scratch/lab}
cfg=$lab/config
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
fail() { echo "DEMO FAILED: $*" >&2; exit 1; }
cleanup() {
  ferry lab down --dir "$lab" >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT

step "ferry lab up: two simulated vCenters (prod and dr) on this machine"
show ferry lab up --dir "$lab"

step "The configuration it wrote ($cfg/lab.hcl)"
sed -n '/^source/,$p' "$cfg/lab.hcl"
cd "$cfg"
show ferry validate && echo "(no diagnostics: the configuration is valid)"
show ferry plan

step "First run: every allocated block of the three VMs crosses"
show ferry run lab

step "web-01's guest writes a little; changed block tracking sees it"
show ferry lab write --dir "$lab" web-01

step "Second run: only the changed blocks cross"
printf '$ %s\n' "ferry run lab"
out=$(ferry run lab) || { echo "$out"; fail "the second run failed"; }
echo "$out"
for d in 0 1; do
  grep -q "web-01 disk $d: done (change-tracking" <<<"$out" || fail "web-01 disk $d was not copied with changed block tracking"
done
grep -q "db-01 disk 0: change-tracking, 0 B to check" <<<"$out" || fail "db-01 did not change, yet ferry looked at some of it"
# What crosses is at most what change tracking named (the run reads only
# that): blocks whose stored digests are still loading when they are read
# are sent without comparison, so how much of it crosses varies with
# timing; never more, and never the disks.
sent=$(sed -n 's/.*, \([0-9.]* [KMG]*i*B\) sent,.*/\1/p' <<<"$out")
read=$(sed -n 's/.*, \([0-9.]* [KMG]*i*B\) read,.*/\1/p' <<<"$out")
bytes() { awk -v s="$1" 'BEGIN { split(s, a, " "); m = 1
  if (a[2] == "KiB") m = 1024; else if (a[2] == "MiB") m = 1048576; else if (a[2] == "GiB") m = 1073741824
  printf "%d", a[1] * m }'; }
if [ -n "$sent" ] && [ -n "$read" ] &&
  (( $(bytes "$read") < 4 * 1048576 && $(bytes "$sent") <= $(bytes "$read") * 101 / 100 + 65536 )); then
  echo "OK: $sent sent, at most the $read change tracking named, for a few hundred KiB of guest writes, out of 224 MiB of disks"
else
  fail "the second run read $read and sent $sent"
fi
show ferry points lab web-01

step "Disaster: fail web-01 over to its replica on dr"
show ferry failover lab web-01
# Output is captured before it is searched: no `| grep -q` under pipefail,
# where grep leaving at the first match fails the pipeline.
printf '$ %s\n' "ferry lab status --dir $lab"
status=$(ferry lab status --dir "$lab") || { echo "$status"; fail "ferry lab status failed"; }
echo "$status"
grep -Eq '^ +web-01_replica +poweredOn +10\.2\.0\.11 +DR Network 10\.2\.0\.11 ' <<<"$status" ||
  fail "the simulator does not report web-01_replica running on DR Network with 10.2.0.11"
echo "OK: the simulated vCenter reports web-01_replica powered on, on \"DR Network\", with the re-IP'd address 10.2.0.11 (it was 10.1.0.11)"

step "Undo the failover: the replica stops, replication resumes"
show ferry failover undo lab web-01
status=$(ferry lab status --dir "$lab") || { echo "$status"; fail "ferry lab status failed"; }
grep -Eq '^ +web-01_replica +poweredOff ' <<<"$status" || fail "web-01_replica is still running after the undo"
show ferry run lab

step "ferry lab down: the simulated vCenters stop, the lab's files go"
cd "$root"
show ferry lab down --dir "$lab"
[ ! -e "$lab" ] || fail "$lab is still there"

step "Done"
echo "Your own lab: 'ferry lab up' (in ~/.ferry/lab) prints what to type next."
