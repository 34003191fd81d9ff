#!/usr/bin/env bash
# The layering rule: core, scheduler, config (and cmd) never import
# plugins/; plugins import nothing of ferry but the sdk; the sdk imports
# nothing of ferry outside sdk/. e2e and bench drive plugins and may import them.
# No ferry-plugin-* binary links the simulator.
set -euo pipefail
mod=github.com/ferry-dr/ferry
fail=0
imports() { # package path, then its imports and test imports, one per line
  go list -f '{{.ImportPath}}{{range .Imports}} {{.}}{{end}}{{range .TestImports}} {{.}}{{end}}{{range .XTestImports}} {{.}}{{end}}' "$@"
}
while read -r pkg deps; do
  for d in $deps; do
    case "$pkg" in
      $mod/plugins/*)
        case "$d" in $mod/sdk|$mod/sdk/*|$mod/plugins/*) ;; $mod|$mod/*) echo "layering: $pkg imports $d (plugins may import only the sdk)"; fail=1 ;; esac ;;
      *)
        case "$d" in $mod/plugins/*) echo "layering: $pkg imports $d (only plugins and e2e may import plugins)"; fail=1 ;; esac ;;
    esac
  done
done < <(imports $(go list ./... | grep -vE "^$mod/(e2e|bench)"))
while read -r pkg deps; do
  for d in $deps; do
    case "$d" in $mod/sdk|$mod/sdk/*) ;; $mod|$mod/*) echo "layering: $pkg imports $d (the sdk imports nothing of ferry outside sdk/)"; fail=1 ;; esac
  done
done < <(cd sdk && imports ./...)
# The simulator and its gap fillers (vcsimtest) run in tests and in the lab
# (ferry-lab-*), never in a plugin binary ferry loads.
# (The list is captured first: under pipefail, `go list | grep -q` fails when
# grep leaves at the first match, and the check would pass.)
for cmd in $(go list ./plugins/*/cmd/ferry-plugin-*); do
  deps=$(go list -deps "$cmd")
  if grep -qE '^github.com/vmware/govmomi/simulator$|/vcsimtest$|/plugins/[^/]+/lab$' <<<"$deps"; then
    echo "layering: $cmd links the vSphere simulator or a lab (only tests and ferry-lab-* may)"; fail=1
  fi
done
# The simulated Hyper-V host is part of ferry-plugin-hyperv on purpose
# (host = "sim:DIR" selects it, for the lab); no other plugin binary links
# it, and no plugin binary links the plugins' test helpers.
for cmd in $(go list ./plugins/*/cmd/ferry-plugin-*); do
  deps=$(go list -deps "$cmd")
  if [ "$cmd" != "$mod/plugins/hyperv/cmd/ferry-plugin-hyperv" ] && grep -qE '^github.com/ferry-dr/ferry/plugins/hyperv/simhost$' <<<"$deps"; then
    echo "layering: $cmd links the simulated Hyper-V host (only ferry-plugin-hyperv, tests and labs may)"; fail=1
  fi
  if grep -qE '^github.com/ferry-dr/ferry/sdk/sdktest$' <<<"$deps"; then
    echo "layering: $cmd links sdk/sdktest (test code)"; fail=1
  fi
done
[ "$fail" = 0 ] && echo "layering holds"
exit "$fail"
