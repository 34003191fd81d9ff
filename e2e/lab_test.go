package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/pluginhost"
	"github.com/ferry-dr/ferry/sdk"
)

// lab is a two-site local lab: prod (the source), dr (the target), a
// repository and a configuration folder with one job "e2e".
type lab struct {
	t                   *testing.T
	dir, prod, dr, meta string
	cfg                 string
	rng                 *rand.Rand
}

type vmSpec struct {
	name  string
	disks []string // sizes, e.g. "16MiB"
	nic   string
}

func newLab(t *testing.T, retention int, vms ...vmSpec) *lab {
	t.Helper()
	dir := t.TempDir()
	l := &lab{t: t, dir: dir, prod: filepath.Join(dir, "prod"), dr: filepath.Join(dir, "dr"), meta: filepath.Join(dir, "meta"),
		cfg: filepath.Join(dir, "config"), rng: rand.New(rand.NewPCG(uint64(len(t.Name())), 7))}
	var names []string
	for _, vm := range vms {
		args := []string{"vm", "create", l.prod, vm.name}
		for _, d := range vm.disks {
			args = append(args, "--disk", d)
		}
		if vm.nic != "" {
			args = append(args, "--nic", vm.nic)
		}
		local(t, nil, args...)
		names = append(names, fmt.Sprintf("%q", vm.name))
	}
	l.writeConfig(fmt.Sprintf(`
source "local" "prod"     { path = "../prod" }
target "local" "dr"       { path = "../dr" }
repository "local" "meta" { path = "../meta" }

job "e2e" {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = [%s]
  retention { restore_points = %d }
  network_map {
    from = "prod-net"
    to   = "dr-net"
  }
  re_ip {
    from_subnet = "10.1.0.0/16"
    to_subnet   = "10.2.0.0/16"
    gateway     = "10.2.0.1"
    dns         = ["10.2.0.53"]
  }
}
`, strings.Join(names, ", "), retention))
	return l
}

func (l *lab) writeConfig(hcl string) {
	l.t.Helper()
	if err := os.MkdirAll(l.cfg, 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.cfg, "main.hcl"), []byte(hcl), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// data returns disk-like bytes: text, random, and zeros.
func (l *lab) data(n int) []byte {
	b := make([]byte, n)
	for pos := 0; pos < n; {
		k := min(n-pos, 4096*(1+l.rng.IntN(8)))
		switch l.rng.IntN(3) {
		case 0:
			for i := range k {
				b[pos+i] = "replicate me "[(pos+i)%13]
			}
		case 1:
			for i := range k {
				b[pos+i] = byte(l.rng.Uint32())
			}
		}
		pos += k
	}
	return b
}

// random returns n random bytes.
func (l *lab) random(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(l.rng.Uint32())
	}
	return b
}

// write makes a tracked write of n bytes of disk-like data at off.
func (l *lab) write(vm string, disk int, off int64, n int) {
	l.t.Helper()
	local(l.t, l.data(n), "vm", "write", l.prod, vm, fmt.Sprint(disk), fmt.Sprint(off))
}

// scatter makes count tracked writes of 4-64 KiB at random offsets.
func (l *lab) scatter(vm string, disk int, size int64, count int) {
	l.t.Helper()
	for i := 0; i < count; i++ {
		n := 4096 * (1 + l.rng.IntN(16))
		l.write(vm, disk, l.rng.Int64N(size-int64(n)), n)
	}
}

// untracked writes random bytes into a disk image behind the plugin's
// back, as dd would.
func (l *lab) untracked(vm string, disk int, off int64, n int) {
	l.t.Helper()
	f, err := os.OpenFile(filepath.Join(l.prod, vm, fmt.Sprintf("disk%d.img", disk)), os.O_WRONLY, 0)
	if err != nil {
		l.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(l.random(n), off); err != nil {
		l.t.Fatal(err)
	}
}

// source reads a disk as the VM has it now.
func (l *lab) source(vm string, disk int) []byte {
	l.t.Helper()
	return []byte(local(l.t, nil, "vm", "read", l.prod, vm, fmt.Sprint(disk)).stdout)
}

// point reads a disk of a restore point of a VM's replica.
func (l *lab) point(vm, point string, disk int) []byte {
	l.t.Helper()
	return []byte(local(l.t, nil, "vm", "read", l.dr, vm+"_replica", fmt.Sprint(disk), "--point", point).stdout)
}

// replicaDisk reads a disk of the replica VM itself (after a failover).
func (l *lab) replicaDisk(vm string, disk int) []byte {
	l.t.Helper()
	return []byte(local(l.t, nil, "vm", "read", l.dr, vm+"_replica", fmt.Sprint(disk)).stdout)
}

// run runs the job and returns its session summary.
func (l *lab) run() session {
	l.t.Helper()
	r := ferry(l.t, l.cfg, "run", "--json", "e2e")
	var s session
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		l.t.Fatalf("ferry run --json: %v\n%s", err, r)
	}
	s.code, s.stderr = r.code, r.stderr
	return s
}

// session is what `ferry run --json` prints.
type session struct {
	catalog.Session
	Totals catalog.Totals `json:"totals"`
	code   int
	stderr string
}

func (s session) modes() string {
	var out []string
	for _, vm := range s.VMs {
		for _, d := range vm.Disks {
			out = append(out, string(d.Mode))
		}
	}
	return strings.Join(out, ",")
}

func (s session) vm(name string) catalog.VMResult {
	for _, v := range s.VMs {
		if v.VM == name {
			return v
		}
	}
	return catalog.VMResult{}
}

// points lists a VM's restore points from `ferry points --json`.
func (l *lab) points(vm string) []catalog.RestorePoint {
	l.t.Helper()
	r := ferry(l.t, l.cfg, "points", "--json", "e2e", vm)
	if r.code != 0 {
		l.t.Fatalf("ferry points: %s", r)
	}
	var ps []catalog.RestorePoint
	if err := json.Unmarshal([]byte(r.stdout), &ps); err != nil {
		l.t.Fatal(err)
	}
	return ps
}

// snapshots lists the source snapshots of a VM, through the plugin.
func (l *lab) snapshots(vm string) []sdk.Snapshot {
	l.t.Helper()
	h := pluginhost.New(pluginhost.Options{Dirs: []string{bin}})
	defer h.Close()
	src, _, err := h.Source(context.Background(), "local", cty.ObjectVal(map[string]cty.Value{"path": cty.StringVal(l.prod)}))
	if err != nil {
		l.t.Fatal(err)
	}
	snaps, err := src.ListSnapshots(context.Background(), vm)
	if err != nil {
		l.t.Fatal(err)
	}
	return snaps
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: differs at byte %d", what, i)
			}
		}
	}
}
