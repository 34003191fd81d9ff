package recovery

import (
	"fmt"
	"io"
	"strings"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/sdk"
)

// Preview is what starting a plan would do now.
type Preview struct {
	Plan string `json:"plan"`
	// Waves are the groups in the order they would start: each wave's
	// groups start together, once the waves before are ready.
	Waves [][]GroupPreview `json:"waves"`
}

// GroupPreview is one group of a Preview.
type GroupPreview struct {
	Group     string      `json:"group"`
	DependsOn []string    `json:"depends_on,omitempty"`
	Ready     string      `json:"ready,omitempty"` // what makes it ready, in words; "" for nothing
	VMs       []VMPreview `json:"vms"`
}

// VMPreview is one VM of a Preview.
type VMPreview struct {
	VM    string           `json:"vm"` // JOB/VM
	State sdk.ReplicaState `json:"state,omitempty"`
	Point string           `json:"point,omitempty"` // the restore point it would start from (the newest)
	// Problem is why it could not fail over now; "" when it could.
	Problem string `json:"problem,omitempty"`
}

// Previews says what starting p would do now, from the catalog.
func (r *Runner) Preview(p *config.FailoverPlan) (*Preview, error) {
	out := &Preview{Plan: p.Name}
	done := map[string]bool{}
	for len(done) < len(p.Groups) {
		var wave []GroupPreview
		for _, g := range p.Groups {
			if done[g.Name] || !all(g.DependsOn, done) {
				continue
			}
			gp := GroupPreview{Group: g.Name, DependsOn: g.DependsOn, Ready: readyWords(g.Ready)}
			for _, vm := range g.VMs {
				vp := VMPreview{VM: vm.String()}
				rec, err := r.Catalog.Replica(vm.Job, vm.VM)
				switch {
				case err != nil:
					vp.Problem = "no replica yet: run the job first"
				case rec.State != sdk.ReplicaReady:
					vp.State, vp.Problem = rec.State, fmt.Sprintf("its replica is %s", rec.State)
				default:
					vp.State = rec.State
					points, err := r.Catalog.RestorePoints(vm.Job, vm.VM)
					if err != nil {
						return nil, err
					}
					if len(points) == 0 {
						vp.Problem = "no restore point"
					} else {
						vp.Point = points[len(points)-1].ID
					}
				}
				gp.VMs = append(gp.VMs, vp)
			}
			wave = append(wave, gp)
		}
		if len(wave) == 0 {
			return nil, fmt.Errorf("failover plan %q: its groups depend on each other in a circle", p.Name)
		}
		for _, g := range wave {
			done[g.Group] = true
		}
		out.Waves = append(out.Waves, wave)
	}
	return out, nil
}

func all(names []string, done map[string]bool) bool {
	for _, n := range names {
		if !done[n] {
			return false
		}
	}
	return true
}

func readyWords(c *config.ReadyCheck) string {
	if c == nil {
		return ""
	}
	var w []string
	if c.TCPPort > 0 {
		w = append(w, fmt.Sprintf("port %d answers", c.TCPPort))
	}
	if len(c.Script) > 0 {
		w = append(w, strings.Join(c.Script, " ")+" exits 0")
	}
	if c.Delay > 0 {
		w = append(w, fmt.Sprintf("%s pass", c.Delay))
	}
	return strings.Join(w, ", then ")
}

// Write writes the preview for people, in the manner of the jobs' plans:
// + a VM that would fail over, ! one that could not.
func (p *Preview) Write(w io.Writer) {
	fmt.Fprintf(w, "failover plan %s (ferry failover plan %s):\n", p.Plan, p.Plan)
	for i, wave := range p.Waves {
		for _, g := range wave {
			after := ""
			if len(g.DependsOn) > 0 {
				after = " after " + strings.Join(g.DependsOn, ", ")
			}
			ready := ""
			if g.Ready != "" {
				ready = "; ready when " + g.Ready
			}
			fmt.Fprintf(w, "  %d. group %s%s%s\n", i+1, g.Group, after, ready)
			for _, vm := range g.VMs {
				if vm.Problem != "" {
					fmt.Fprintf(w, "  !   %s: %s\n", vm.VM, vm.Problem)
					continue
				}
				fmt.Fprintf(w, "  +   %s: fails over to restore point %s\n", vm.VM, vm.Point)
			}
		}
	}
}
