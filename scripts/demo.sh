#!/usr/bin/env bash
# The demo: a two-site lab on the local plugin, a job replicating three VMs,
# incremental runs (tracked and untracked changes), restore points, a
# failover to the older point with its data checked, an undo, a failover and
# a failback home (sync, switch, commit, an incremental run); then the
# vSphere part on `ferry lab` (scripts/demo-vsphere.sh) and the mixed part,
# vSphere onto a simulated Hyper-V host (scripts/demo-mixed.sh).
# Run it with `make demo`; it needs only the binaries in bin/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:$PATH"
lab=${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")}
mkdir -p "$lab/config"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

# disk-like data: text that compresses, random bytes that do not, and the
# zeros in between that are never sent.
text() { (set +o pipefail; base64 -w 76 /dev/urandom | tr 'A-Za-z0-9+/' 'eeeetaoinshrdlucmfwypvbgkqjxz    ' | head -c "$1"); }
random() { head -c "$1" /dev/urandom; }
write() { ferry-plugin-local vm write "$lab/prod" "$1" "$2" "$3" >/dev/null; }

step "A production site with three VMs (folder $lab/prod)"
ferry-plugin-local vm create "$lab/prod" web-01 --disk 96MiB --disk 32MiB --nic "VM Network=10.1.0.11/24" --cpus 2 --memory 2048
ferry-plugin-local vm create "$lab/prod" web-02 --disk 96MiB --nic "VM Network=10.1.0.12/24" --cpus 2 --memory 2048
ferry-plugin-local vm create "$lab/prod" db-01 --disk 192MiB --nic "VM Network=10.1.0.21/24" --cpus 4 --memory 8192
for vm in web-01 web-02; do
  text 24000000 | write $vm 0 0
  random 8000000 | write $vm 0 50331648
done
text 2000000 | write web-01 1 0
text 60000000 | write db-01 0 0
random 30000000 | write db-01 0 100663296

step "The configuration ($lab/config/main.hcl)"
cat > "$lab/config/main.hcl" <<HCL
source "local" "prod"     { path = "../prod" }
target "local" "dr"       { path = "../dr" }
repository "local" "meta" { path = "../meta" }

job "demo" {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = ["web-01", "web-02", "db-01"]
  schedule   = "every 15m"
  retention { restore_points = 7 }

  network_map {
    from = "VM Network"
    to   = "DR Network"
  }
  re_ip {
    from_subnet = "10.1.0.0/16"
    to_subnet   = "10.2.0.0/16"
    gateway     = "10.2.0.1"
    dns         = ["10.2.0.53"]
  }
  transfer { compression = "auto" }
}
HCL
cat "$lab/config/main.hcl"
cd "$lab/config"
show ferry plugins
show ferry validate && echo "(no diagnostics: the configuration is valid)"
show ferry plan

step "First run: every allocated block is copied; zeros never are"
show ferry run demo
ferry-plugin-local vm read "$lab/prod" web-01 0 > "$lab/web-01.disk0.first"

step "The VMs keep working: tracked writes, and one disk changed behind ferry's back"
random 400000 | write web-01 0 4194304
text 300000 | write web-01 0 70000000
text 200000 | write db-01 0 8388608
# An untracked change: change tracking resets and ferry compares digests.
dd if=/dev/urandom of="$lab/prod/web-02/disk0.img" bs=4096 count=64 seek=2000 conv=notrunc status=none
echo "web-01 and db-01 written through the hypervisor; web-02 changed with dd"

step "Second run: only the changes cross"
show ferry run demo
show ferry points demo web-01

step "Fail web-01 over to the OLDER restore point"
points=$(ferry points --json demo web-01)
first=$(sed -n '/"id": "/{s/.*"id": "\([^"]*\)".*/\1/p;q;}' <<<"$points")
show ferry failover demo web-01 --point "$first"
if cmp -s "$lab/web-01.disk0.first" <(ferry-plugin-local vm read "$lab/dr" web-01_replica 0); then
  echo "OK: the failed-over disk matches byte for byte what web-01 held at the first run"
else
  echo "MISMATCH: the failed-over disk differs from the first run's data" >&2
  exit 1
fi
show ferry-plugin-local vm show "$lab/dr" web-01_replica
show ferry status

step "Undo the failover: the replica returns to replication, no restore point lost"
show ferry failover undo demo web-01
show ferry run demo
show ferry status

step "Fail back: the replica runs at dr and writes; only what it wrote crosses back"
show ferry failover demo web-01
random 65536 | ferry-plugin-local vm write "$lab/dr" web-01_replica 0 1048576 >/dev/null
show ferry failback demo web-01
random 16384 | ferry-plugin-local vm write "$lab/dr" web-01_replica 0 2097152 >/dev/null
show ferry failback switch demo web-01
if cmp -s <(ferry-plugin-local vm read "$lab/prod" web-01 0) <(ferry-plugin-local vm read "$lab/dr" web-01_replica 0); then
  echo "OK: production's disk matches byte for byte what the replica held at the switch"
else
  echo "MISMATCH: production's disk differs from the replica's at the switch" >&2
  exit 1
fi
show ferry failback commit demo web-01
show ferry run demo

step "ferry server runs the schedule (every 5s here), with an API and metrics"
sed -i 's/schedule   = "every 15m"/schedule   = "every 5s"\n  rpo        = "1h"/' main.hcl
token=$(ferry token create demo --role read 2>/dev/null)
ferry server --insecure-plaintext --listen 127.0.0.1:0 2>"$lab/server.log" &
server=$!
# The run missed while no server ran goes first ("why":"missed"); then
# wait for a run of the schedule ("why":"schedule") to end.
for _ in $(seq 150); do
  if grep -q '"why":"schedule"' "$lab/server.log" 2>/dev/null &&
     [ "$(sed -n '/"why":"schedule"/,$p' "$lab/server.log" | grep -c '"session ended"')" -ge 1 ]; then
    break
  fi
  sleep 0.2
done
api=$(sed -n 's/.*API on \([^;]*\);.*/\1/p' "$lab/server.log")
echo "the server's log ($lab/server.log): the run missed while no server ran, then one at the schedule"
grep -E '"session (starts|ended)"' "$lab/server.log" | head -4
show ferry status
if command -v curl >/dev/null; then
  printf '$ curl -H "Authorization: Bearer $token" %s/metrics | grep ferry_sessions_total\n' "$api"
  curl -s -H "Authorization: Bearer $token" "$api/metrics" | grep '^ferry_sessions_total'
fi
kill -TERM $server
wait $server
show ferry sessions demo --limit 3

step "The local lab is done"
echo "Its files are in $lab (delete them when done). Try: cd $lab/config && ferry plan"

"$root/scripts/demo-vsphere.sh"
"$root/scripts/demo-mixed.sh"
echo "The whole demo took ${SECONDS}s."
