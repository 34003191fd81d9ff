package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/ferry-dr/ferry/scheduler"
)

// FailoverPlan is a failover_plan block: the VMs of an application, from
// one or more jobs, in groups that fail over in order.
type FailoverPlan struct {
	Name string
	// Groups are in the order written; each starts once the groups it
	// depends on are up (ready), and groups with no path between them
	// start together.
	Groups []*PlanGroup
	// PreScript and PostScript run before the first group and after the
	// last (absent: none): a program and its arguments, run in the
	// configuration folder.
	PreScript, PostScript []string
	// TestNetworkMap maps networks to the isolated networks a test of the
	// plan (ferry failover plan NAME --test) puts its test VMs on; a NIC
	// on a network it does not map goes on the target's isolated network.
	// From may name a production network or the DR network a job maps it
	// to.
	TestNetworkMap []NetworkMapping
	// TestSchedule is when `ferry server` tests the plan, in a job's
	// schedule syntax; zero: only when asked.
	TestSchedule scheduler.Schedule

	DeclRange hcl.Range
}

// PlanGroup is one group of a failover plan.
type PlanGroup struct {
	Name      string
	VMs       []PlanVM
	DependsOn []string
	// Ready is how the group is judged up before the groups that depend
	// on it start; nil: as soon as its VMs are failed over.
	Ready *ReadyCheck

	DeclRange hcl.Range
}

// PlanVM is a VM of a job in a plan.
type PlanVM struct {
	Job, VM string
	Range   hcl.Range
}

func (v PlanVM) String() string { return v.Job + "/" + v.VM }

// ReadyCheck says when a group is up.
type ReadyCheck struct {
	// Delay is a time to wait, after the VMs started (and the checks
	// below passed).
	Delay time.Duration
	// TCPPort, when set, must accept connections on every VM's address
	// (after re-IP) within Timeout.
	TCPPort int
	// Script, when set, must exit 0 within Timeout; it runs in the
	// configuration folder with FERRY_PLAN, FERRY_GROUP and FERRY_VMS
	// (JOB/VM, space-separated) in its environment, and FERRY_ADDRESSES
	// (the VMs' addresses after re-IP).
	Script []string
	// Timeout bounds the TCP and script checks (DefaultReadyTimeout).
	Timeout time.Duration
}

// DefaultReadyTimeout bounds a readiness check without a timeout.
const DefaultReadyTimeout = 5 * time.Minute

var (
	failoverPlanSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "pre_script"}, {Name: "post_script"}, {Name: "test_schedule"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "group", LabelNames: []string{"name"}}, {Type: "test_network_map"}},
	}
	planGroupSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "vms", Required: true}, {Name: "depends_on"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "ready"}},
	}
	readySchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "delay"}, {Name: "tcp_port"}, {Name: "script"}, {Name: "timeout"},
	}}
)

// decodeFailoverPlan decodes a failover_plan block after the jobs: its VMs
// name them. ok is false after a problem; the plan is then left out.
func (l *loader) decodeFailoverPlan(b *hcl.Block) (*FailoverPlan, bool) {
	p := &FailoverPlan{Name: b.Labels[0], DeclRange: b.DefRange}
	content, diags := b.Body.Content(failoverPlanSchema)
	l.diags = append(l.diags, diags...)
	ok := !diags.HasErrors()
	for _, s := range []struct {
		name string
		dst  *[]string
	}{{"pre_script", &p.PreScript}, {"post_script", &p.PostScript}} {
		if a, present := content.Attributes[s.name]; present {
			argv, good := l.command(a)
			*s.dst, ok = argv, ok && good
		}
	}
	if a, present := content.Attributes["test_schedule"]; present {
		sched, good := l.schedule(a, "a plan tested only when asked")
		p.TestSchedule, ok = sched, ok && good
	}
	seen := map[string]hcl.Range{}
	mapped := map[string]hcl.Range{}
	for _, gb := range content.Blocks {
		if gb.Type == "test_network_map" {
			m, good := l.networkMapping(gb, mapped)
			ok = ok && good
			if good {
				p.TestNetworkMap = append(p.TestNetworkMap, m)
			}
			continue
		}
		g, good := l.decodePlanGroup(p, gb)
		ok = ok && good
		if first, dup := seen[g.Name]; dup {
			l.errorf(gb.DefRange, "Duplicate group", "Failover plan %q has a group %q already, at %s. Group names must be unique in a plan.", p.Name, g.Name, first)
			ok = false
			continue
		}
		seen[g.Name] = gb.DefRange
		p.Groups = append(p.Groups, g)
	}
	if len(p.Groups) == 0 && !diags.HasErrors() {
		l.errorf(b.DefRange, "Empty failover plan", "Failover plan %q has no group: add group \"NAME\" { vms = [\"JOB/VM\"] }.", p.Name)
		ok = false
	}
	return p, ok && l.checkPlan(p)
}

func (l *loader) decodePlanGroup(p *FailoverPlan, b *hcl.Block) (*PlanGroup, bool) {
	g := &PlanGroup{Name: b.Labels[0], DeclRange: b.DefRange}
	content, diags := b.Body.Content(planGroupSchema)
	l.diags = append(l.diags, diags...)
	ok := !diags.HasErrors()
	if a, present := content.Attributes["vms"]; present {
		refs, good := evalStringList(a, l.ctx, &l.diags)
		ok = ok && good
		for _, ref := range refs {
			vm, good := l.planVM(p, ref)
			ok = ok && good
			if good {
				g.VMs = append(g.VMs, vm)
			}
		}
		if good && len(refs) == 0 {
			l.errorf(a.Expr.Range(), "Empty group", "Group %q of failover plan %q names no VM.", g.Name, p.Name)
			ok = false
		}
	}
	if a, present := content.Attributes["depends_on"]; present {
		deps, good := evalStringList(a, l.ctx, &l.diags)
		ok = ok && good
		for _, d := range deps {
			g.DependsOn = append(g.DependsOn, d.Value)
		}
	}
	for _, rb := range content.Blocks {
		if g.Ready != nil {
			l.errorf(rb.DefRange, "Duplicate ready block", "Group %q has a ready block already.", g.Name)
			ok = false
			continue
		}
		r, good := l.decodeReady(rb)
		g.Ready, ok = r, ok && good
	}
	return g, ok
}

// planVM reads "JOB/VM": the job must exist and, when it names its VMs
// one by one, name this one.
func (l *loader) planVM(p *FailoverPlan, ref stringAt) (PlanVM, bool) {
	job, vm, found := strings.Cut(ref.Value, "/")
	if !found || job == "" || vm == "" {
		l.errorf(ref.Range, "Invalid VM reference", "%q is not JOB/VM: a plan names each VM with the job that replicates it, such as \"web/web-01\".", ref.Value)
		return PlanVM{}, false
	}
	j, ok := l.cfg.Jobs[job]
	if !ok {
		l.errorf(ref.Range, "Unknown job", "Failover plan %q names job %q, which the configuration does not declare (jobs: %s).", p.Name, job, strings.Join(slices.Sorted(maps.Keys(l.cfg.Jobs)), ", "))
		return PlanVM{}, false
	}
	if !slices.Contains(j.VMs, vm) && !j.Selects() {
		l.errorf(ref.Range, "Unknown VM", "Failover plan %q names VM %q of job %q, which the job does not replicate (its VMs: %s).", p.Name, vm, job, strings.Join(j.VMs, ", "))
		return PlanVM{}, false
	}
	return PlanVM{Job: job, VM: vm, Range: ref.Range}, true
}

func (l *loader) decodeReady(b *hcl.Block) (*ReadyCheck, bool) {
	r := &ReadyCheck{Timeout: DefaultReadyTimeout}
	content, diags := b.Body.Content(readySchema)
	l.diags = append(l.diags, diags...)
	ok := !diags.HasErrors()
	attrs := content.Attributes
	if a, present := attrs["delay"]; present {
		d, _, good := evalDuration(a, l.ctx, "delay", &l.diags)
		r.Delay, ok = d, ok && good
	}
	if a, present := attrs["timeout"]; present {
		d, _, good := evalDuration(a, l.ctx, "timeout", &l.diags)
		r.Timeout, ok = d, ok && good
	}
	if a, present := attrs["tcp_port"]; present {
		n, set, good := evalInt(a, l.ctx, &l.diags)
		if good && set && (n < 1 || n > 65535) {
			l.errorf(a.Expr.Range(), "Invalid port", "tcp_port %d is not a port (1-65535).", n)
			good = false
		}
		r.TCPPort, ok = n, ok && good
	}
	if a, present := attrs["script"]; present {
		argv, good := l.command(a)
		r.Script, ok = argv, ok && good
	}
	if ok && r.Delay == 0 && r.TCPPort == 0 && len(r.Script) == 0 {
		l.errorf(b.DefRange, "Empty ready block", "A ready block needs a delay, a tcp_port or a script.")
		ok = false
	}
	return r, ok
}

// command reads a program and its arguments: a string (split at spaces)
// or a list of strings.
func (l *loader) command(a *hcl.Attribute) ([]string, bool) {
	if s, diags := a.Expr.Value(l.ctx); !diags.HasErrors() && s.Type().FriendlyName() == "string" && !s.IsNull() {
		argv := strings.Fields(s.AsString())
		if len(argv) == 0 {
			l.errorf(a.Expr.Range(), "Empty command", "%s names no program.", a.Name)
			return nil, false
		}
		return argv, true
	}
	list, ok := evalStringList(a, l.ctx, &l.diags)
	if !ok {
		return nil, false
	}
	if len(list) == 0 {
		l.errorf(a.Expr.Range(), "Empty command", "%s names no program.", a.Name)
		return nil, false
	}
	argv := make([]string, len(list))
	for i, s := range list {
		argv[i] = s.Value
	}
	return argv, true
}

// checkPlan checks a plan's graph: known groups in depends_on, no cycle,
// no VM twice.
func (l *loader) checkPlan(p *FailoverPlan) bool {
	ok := true
	groups := map[string]*PlanGroup{}
	for _, g := range p.Groups {
		groups[g.Name] = g
	}
	where := map[string]string{}
	for _, g := range p.Groups {
		for _, d := range g.DependsOn {
			if groups[d] == nil {
				l.errorf(g.DeclRange, "Unknown group", "Group %q of failover plan %q depends on %q, which the plan does not have.", g.Name, p.Name, d)
				ok = false
			}
		}
		for _, vm := range g.VMs {
			if other, dup := where[vm.String()]; dup {
				l.errorf(vm.Range, "VM in two groups", "%s is in group %q and in group %q of failover plan %q: a VM fails over once.", vm, other, g.Name, p.Name)
				ok = false
			}
			where[vm.String()] = g.Name
		}
	}
	if !ok {
		return false
	}
	// A cycle: depth-first, reporting the first found with its path.
	state := map[string]int{} // 1 visiting, 2 done
	var path []string
	var visit func(name string) bool
	visit = func(name string) bool {
		switch state[name] {
		case 1:
			i := slices.Index(path, name)
			cycle := append(slices.Clone(path[i:]), name)
			l.errorf(groups[name].DeclRange, "Dependency cycle", "The groups of failover plan %q depend on each other in a circle (%s): nothing could start first.", p.Name, strings.Join(cycle, " -> "))
			return false
		case 2:
			return true
		}
		state[name] = 1
		path = append(path, name)
		for _, d := range groups[name].DependsOn {
			if !visit(d) {
				return false
			}
		}
		path = path[:len(path)-1]
		state[name] = 2
		return true
	}
	for _, g := range p.Groups {
		if !visit(g.Name) {
			return false
		}
	}
	return true
}

// Before reports whether group a must be up before group b starts (b
// depends on a, directly or through others).
func (p *FailoverPlan) Before(a, b string) bool {
	groups := map[string]*PlanGroup{}
	for _, g := range p.Groups {
		groups[g.Name] = g
	}
	seen := map[string]bool{}
	var reach func(from string) bool
	reach = func(from string) bool {
		for _, d := range groups[from].DependsOn {
			if d == a || !seen[d] && func() bool { seen[d] = true; return reach(d) }() {
				return true
			}
		}
		return false
	}
	return groups[a] != nil && groups[b] != nil && reach(b)
}

// Jobs names the jobs of p's VMs, each once, in the order the plan first
// names them.
func (p *FailoverPlan) Jobs() []string {
	var out []string
	for _, g := range p.Groups {
		for _, vm := range g.VMs {
			if !slices.Contains(out, vm.Job) {
				out = append(out, vm.Job)
			}
		}
	}
	return out
}

// groupOf names the group of vm in p, "" when p has none.
func (p *FailoverPlan) groupOf(vm string) string {
	for _, g := range p.Groups {
		for _, v := range g.VMs {
			if v.String() == vm {
				return g.Name
			}
		}
	}
	return ""
}

// checkPlanOrders refuses two plans that order the same two VMs in
// opposite ways: failing one over would contradict the other.
func (l *loader) checkPlanOrders() {
	plans := slices.SortedFunc(maps.Values(l.cfg.FailoverPlans), func(a, b *FailoverPlan) int { return strings.Compare(a.Name, b.Name) })
	for i, p := range plans {
		for _, q := range plans[i+1:] {
			if msg := conflictingOrder(p, q); msg != "" {
				l.errorf(q.DeclRange, "Conflicting failover order", "%s", msg)
				delete(l.cfg.FailoverPlans, q.Name)
			}
		}
	}
}

// conflictingOrder says how p and q order two VMs in opposite ways, ""
// when they do not.
func conflictingOrder(p, q *FailoverPlan) string {
	var vms []string
	for _, g := range p.Groups {
		for _, v := range g.VMs {
			if q.groupOf(v.String()) != "" {
				vms = append(vms, v.String())
			}
		}
	}
	for _, a := range vms {
		for _, b := range vms {
			if p.Before(p.groupOf(a), p.groupOf(b)) && q.Before(q.groupOf(b), q.groupOf(a)) {
				return fmt.Sprintf("Failover plan %q starts %s before %s, and failover plan %q starts %s before %s: a VM in two plans must come in the same order in both.",
					p.Name, a, b, q.Name, b, a)
			}
		}
	}
	return ""
}
