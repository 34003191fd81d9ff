package config

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/scheduler"
	"github.com/ferry-dr/ferry/sdk"
)

var jobSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "source", Required: true},
		{Name: "target", Required: true},
		{Name: "repository"},
		{Name: "vms", Required: true},
		{Name: "exclude"},
		{Name: "proxies"},
		{Name: "schedule"},
		{Name: "rpo"},
		{Name: "quiesce"},
		{Name: "replica_suffix"},
		{Name: "copy_independent_disks"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "retention"},
		{Type: "network_map"},
		{Type: "re_ip"},
		{Type: "transfer"},
		{Type: "retry"},
		{Type: "replica_mapping"},
		{Type: "hardware_map"},
	},
}

var (
	retentionSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "restore_points", Required: true},
	}}
	networkMapSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "from", Required: true},
		{Name: "to", Required: true},
	}}
	reIPSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "from_subnet", Required: true},
		{Name: "to_subnet", Required: true},
		{Name: "gateway"},
		{Name: "dns"},
	}}
	transferSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "compression"},
		{Name: "throttle"},
		{Name: "max_tasks"},
		{Name: "block_size"},
	}}
	retrySchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "attempts"},
		{Name: "wait"},
	}}
)

// Bounds of a transfer's block size.
const (
	MinBlockSize = 4 << 10
	MaxBlockSize = 1 << 20
)

// decodeJob decodes a job block. It runs after all other blocks are
// declared, so that references can be resolved.
func (l *loader) decodeJob(b *hcl.Block) *Job {
	j := &Job{
		Name:          b.Labels[0],
		ReplicaSuffix: DefaultReplicaSuffix,
		Retention:     Retention{RestorePoints: DefaultRestorePoints},
		Transfer:      Transfer{Compression: CompressionAuto},
		Retry:         Retry{Attempts: DefaultRetryAttempts, Wait: DefaultRetryWait},
		Body:          b.Body,
		DeclRange:     b.DefRange,
	}
	content, diags := b.Body.Content(jobSchema)
	l.diags = append(l.diags, diags...)
	attrs := content.Attributes

	if a, ok := attrs["source"]; ok {
		j.Source = l.reference(j, a, sdk.KindSource)
	}
	if a, ok := attrs["target"]; ok {
		j.Target = l.reference(j, a, sdk.KindTarget)
	}
	if a, ok := attrs["repository"]; ok {
		j.Repository = l.reference(j, a, sdk.KindRepository)
	}
	listed := map[string]hcl.Range{}
	if a, ok := attrs["vms"]; ok {
		for _, s := range l.selectors(j, a, false, listed) {
			if s.Kind == SelectVM {
				j.VMs = append(j.VMs, s.Value)
				j.vmRanges = append(j.vmRanges, s.Range)
			} else {
				j.Selectors = append(j.Selectors, s)
			}
		}
	}
	if a, ok := attrs["exclude"]; ok {
		j.Exclude = l.selectors(j, a, true, listed)
	}
	if a, ok := attrs["proxies"]; ok {
		j.Proxies = l.jobProxies(j, a)
	}
	if a, ok := attrs["schedule"]; ok {
		j.Schedule, _ = l.schedule(a, "a job that runs only on demand")
	}
	if a, ok := attrs["rpo"]; ok {
		j.RPO, _, _ = evalDuration(a, l.ctx, "RPO", &l.diags)
	}
	if a, ok := attrs["quiesce"]; ok {
		j.Quiesce, _ = evalBool(a, l.ctx, &l.diags)
	}
	if a, ok := attrs["copy_independent_disks"]; ok {
		j.CopyIndependentDisks, _ = evalBool(a, l.ctx, &l.diags)
	}
	if a, ok := attrs["replica_suffix"]; ok {
		if v, set, ok := evalValue(a, l.ctx, cty.String, &l.diags); ok && set {
			if why := badSuffix(v.AsString()); why != "" {
				l.errorf(a.Expr.Range(), "Invalid replica suffix",
					"Job %q: replica_suffix %q %s. A replica is named by its VM's name and the suffix, and that name must be safe as a file or folder name on every target.", j.Name, v.AsString(), why)
			} else {
				j.ReplicaSuffix = v.AsString()
			}
		}
	}

	var retention, transfer, retry, hardware *hcl.Block
	fromSeen := map[string]hcl.Range{}
	subnetSeen := map[netip.Prefix]hcl.Range{}
	mappedVM, mappedReplica := map[string]hcl.Range{}, map[string]hcl.Range{}
	for _, blk := range content.Blocks {
		switch blk.Type {
		case "retention":
			if l.single(j, blk, &retention) {
				j.Retention = l.retention(blk)
			}
		case "transfer":
			if l.single(j, blk, &transfer) {
				j.Transfer = l.transfer(blk)
			}
		case "retry":
			if l.single(j, blk, &retry) {
				j.Retry = l.retry(blk)
			}
		case "hardware_map":
			if l.single(j, blk, &hardware) {
				j.HardwareMap = l.hardwareMap(j, blk)
			}
		case "network_map":
			if m, ok := l.networkMapping(blk, fromSeen); ok {
				j.NetworkMap = append(j.NetworkMap, m)
			}
		case "re_ip":
			if r, ok := l.reIP(blk, subnetSeen); ok {
				j.ReIP = append(j.ReIP, r)
			}
		case "replica_mapping":
			if m, ok := l.replicaMapping(j, blk, mappedVM, mappedReplica); ok {
				j.ReplicaMappings = append(j.ReplicaMappings, m)
			}
		}
	}
	l.checkSelectors(j)
	l.checkMappings(j)
	l.checkRetentionLimit(j)
	return j
}

// single records the first block of a type that may appear once and
// reports any later one.
func (l *loader) single(j *Job, b *hcl.Block, first **hcl.Block) bool {
	if *first != nil {
		l.errorf(b.DefRange, "Duplicate "+b.Type+" block",
			"Job %q already has a %s block at %s; a job has at most one.", j.Name, b.Type, (*first).DefRange)
		return false
	}
	*first = b
	return true
}

// reference resolves an attribute that refers to a plugin block of kind,
// such as source = source.vsphere.prod. It returns nil after reporting a
// problem, and quietly when the block is declared but broken (its own
// diagnostics say why).
func (l *loader) reference(j *Job, a *hcl.Attribute, kind sdk.Kind) *PluginBlock {
	form := fmt.Sprintf("%s.<type>.<name>", kind)
	trav, diags := hcl.AbsTraversalForExpr(a.Expr)
	if diags.HasErrors() {
		detail := fmt.Sprintf("The %s of job %q must be a reference to a %s block, like %s.", kind, j.Name, kind, form)
		if v, d := a.Expr.Value(nil); !d.HasErrors() && v.Type() == cty.String && !v.IsNull() {
			if _, d := hclsyntax.ParseTraversalAbs([]byte(v.AsString()), "", hcl.InitialPos); !d.HasErrors() {
				detail += fmt.Sprintf(" Write it without quotes: %s = %s.", kind, v.AsString())
			}
		}
		l.errorf(a.Expr.Range(), "Invalid reference", "%s", detail)
		return nil
	}
	root := trav.RootName()
	var names []string
	for _, step := range trav[1:] {
		attr, ok := step.(hcl.TraverseAttr)
		if !ok {
			names = nil
			break
		}
		names = append(names, attr.Name)
	}
	addr := traversalString(trav)
	switch {
	case root != string(kind) && isPluginKind(root):
		l.errorf(trav.SourceRange(), "Wrong kind of reference",
			"The %s of job %q must be a %s block, but %s is a %s block.", kind, j.Name, kind, addr, root)
		return nil
	case root != string(kind) || len(names) != 2:
		l.errorf(trav.SourceRange(), "Invalid reference",
			"The %s of job %q must be a reference to a %s block, like %s; %s is not.", kind, j.Name, kind, form, addr)
		return nil
	}
	blocks := l.pluginMap(kind)
	if pb, ok := blocks[names[0]+"."+names[1]]; ok {
		return pb
	}
	if !l.incomplete {
		var declared []string
		for _, pb := range blocks {
			declared = append(declared, pb.Address())
		}
		slices.Sort(declared)
		l.errorf(trav.SourceRange(), "Reference to undeclared "+string(kind),
			"Job %q refers to %s, which is not declared.%s", j.Name, addr, didYouMean(addr, declared))
	}
	return nil
}

func isPluginKind(name string) bool {
	switch sdk.Kind(name) {
	case sdk.KindSource, sdk.KindTarget, sdk.KindRepository:
		return true
	}
	return false
}

// traversalString renders a traversal as written: source.local.prod.
func traversalString(t hcl.Traversal) string {
	var b strings.Builder
	for _, step := range t {
		switch s := step.(type) {
		case hcl.TraverseRoot:
			b.WriteString(s.Name)
		case hcl.TraverseAttr:
			b.WriteString("." + s.Name)
		case hcl.TraverseIndex:
			switch {
			case s.Key.Type() == cty.String:
				fmt.Fprintf(&b, "[%q]", s.Key.AsString())
			case s.Key.Type() == cty.Number:
				fmt.Fprintf(&b, "[%s]", s.Key.AsBigFloat().Text('f', -1))
			default:
				b.WriteString("[...]")
			}
		default:
			b.WriteString("[...]")
		}
	}
	return b.String()
}

func (l *loader) jobProxies(j *Job, a *hcl.Attribute) []*Proxy {
	list, ok := evalStringList(a, l.ctx, &l.diags)
	if !ok {
		return nil
	}
	names := slices.Sorted(maps.Keys(l.cfg.Proxies))
	seen := map[string]hcl.Range{}
	var out []*Proxy
	for _, name := range list {
		if first, dup := seen[name.Value]; dup {
			l.errorf(name.Range, "Duplicate proxy", "Proxy %q is already listed at %s.", name.Value, first)
			continue
		}
		seen[name.Value] = name.Range
		p, ok := l.cfg.Proxies[name.Value]
		if !ok {
			if !l.incomplete {
				l.errorf(name.Range, "Reference to undeclared proxy",
					"Job %q names proxy %q, which is not declared.%s", j.Name, name.Value, didYouMeanQuoted(name.Value, names))
			}
			continue
		}
		out = append(out, p)
	}
	return out
}

func didYouMeanQuoted(given string, candidates []string) string {
	if s := suggest(given, candidates); s != "" {
		return fmt.Sprintf(" Did you mean %q?", s)
	}
	return ""
}

// schedule reads a schedule (a job's, a plan's test_schedule); a null one
// is absent. without says what leaving it out gives, for the error of an
// empty one.
func (l *loader) schedule(a *hcl.Attribute, without string) (scheduler.Schedule, bool) {
	v, set, ok := evalValue(a, l.ctx, cty.String, &l.diags)
	if !ok || !set {
		return scheduler.Schedule{}, ok
	}
	s := v.AsString()
	if strings.TrimSpace(s) == "" {
		l.errorf(a.Expr.Range(), "Invalid schedule", "The %s is empty. Leave the attribute out for %s.", a.Name, without)
		return scheduler.Schedule{}, false
	}
	sched, err := scheduler.Parse(s, nil)
	if err != nil {
		l.errorf(a.Expr.Range(), "Invalid schedule", "%s", scheduleDetail(err))
		return scheduler.Schedule{}, false
	}
	return sched, true
}

// scheduleDetail explains a scheduler.Parse error.
func scheduleDetail(err error) string {
	var pe *scheduler.ParseError
	if !errors.As(err, &pe) {
		return err.Error() + "."
	}
	const forms = `A schedule is five cron fields (minute hour day-of-month month day-of-week, like "0 2 * * *"), a macro (@hourly, @daily, @weekly, @monthly) or "every <duration>" (like "every 15m"), optionally after CRON_TZ=<zone>.`
	switch {
	case pe.Field != "" && pe.Value != "":
		return fmt.Sprintf("In %q, the %s %q is wrong: %s.", pe.Expr, pe.Field, pe.Value, pe.Reason)
	case pe.Field != "":
		return fmt.Sprintf("In %q, the %s is wrong: %s.", pe.Expr, pe.Field, pe.Reason)
	}
	return fmt.Sprintf("In %q: %s. %s", pe.Expr, pe.Reason, forms)
}

func (l *loader) retention(b *hcl.Block) Retention {
	r := Retention{RestorePoints: DefaultRestorePoints, DeclRange: b.DefRange}
	content, diags := b.Body.Content(retentionSchema)
	l.diags = append(l.diags, diags...)
	if a, ok := content.Attributes["restore_points"]; ok {
		if n, set, ok := evalInt(a, l.ctx, &l.diags); ok && set {
			if n < 1 {
				l.errorf(a.Expr.Range(), "Invalid restore_points", "A replica keeps at least 1 restore point; restore_points is %d.", n)
			} else {
				r.RestorePoints, r.Range = n, a.Expr.Range()
			}
		}
	}
	return r
}

// retry reads how a session tries again the VMs that failed; what it
// leaves out keeps its default.
func (l *loader) retry(b *hcl.Block) Retry {
	r := Retry{Attempts: DefaultRetryAttempts, Wait: DefaultRetryWait, DeclRange: b.DefRange}
	content, diags := b.Body.Content(retrySchema)
	l.diags = append(l.diags, diags...)
	if a, ok := content.Attributes["attempts"]; ok {
		if n, set, ok := evalInt(a, l.ctx, &l.diags); ok && set {
			if n < 1 {
				l.errorf(a.Expr.Range(), "Invalid attempts",
					"A session tries each VM at least once; attempts is %d. It counts the first try: 1 never tries again.", n)
			} else {
				r.Attempts = n
			}
		}
	}
	if a, ok := content.Attributes["wait"]; ok {
		if s, ok := evalString(a, l.ctx, &l.diags); ok && s != "" {
			d, err := time.ParseDuration(s)
			switch {
			case err != nil:
				l.errorf(a.Expr.Range(), "Invalid wait", "wait %q is not a duration; use h, m and s, like 10m, 90s or 1h30m.", s)
			case d < 0:
				l.errorf(a.Expr.Range(), "Invalid wait", "wait %q is negative; it is the time between one try of the VMs that failed and the next (\"0s\" tries again at once).", s)
			default:
				r.Wait = d
			}
		}
	}
	return r
}

func (l *loader) networkMapping(b *hcl.Block, seen map[string]hcl.Range) (NetworkMapping, bool) {
	m := NetworkMapping{DeclRange: b.DefRange}
	content, diags := b.Body.Content(networkMapSchema)
	l.diags = append(l.diags, diags...)
	ok := !diags.HasErrors()
	for _, name := range []string{"from", "to"} {
		a, present := content.Attributes[name]
		if !present {
			continue
		}
		s, good := evalString(a, l.ctx, &l.diags)
		if good && strings.TrimSpace(s) == "" {
			l.errorf(a.Expr.Range(), "Invalid network name", "The network name in %s must not be empty.", name)
			good = false
		}
		ok = ok && good
		if name == "from" {
			m.From = s
			if good {
				if first, dup := seen[s]; dup {
					l.errorf(a.Expr.Range(), "Duplicate network mapping",
						"Network %q is already mapped at %s; each source network maps to one target network.", s, first)
					ok = false
				} else {
					seen[s] = a.Expr.Range()
				}
			}
		} else {
			m.To = s
		}
	}
	return m, ok
}

func (l *loader) reIP(b *hcl.Block, seen map[netip.Prefix]hcl.Range) (ReIPRule, bool) {
	r := ReIPRule{DeclRange: b.DefRange}
	content, diags := b.Body.Content(reIPSchema)
	l.diags = append(l.diags, diags...)
	ok := !diags.HasErrors()
	attrs := content.Attributes
	prefix := func(name string) (netip.Prefix, bool) {
		a, present := attrs[name]
		if !present {
			return netip.Prefix{}, false
		}
		s, good := evalString(a, l.ctx, &l.diags)
		if !good {
			return netip.Prefix{}, false
		}
		p, err := parseSubnet(s)
		if err != nil {
			l.errorf(a.Expr.Range(), "Invalid subnet", "%s: %s.", name, err)
			return netip.Prefix{}, false
		}
		return p, true
	}
	from, fromOK := prefix("from_subnet")
	to, toOK := prefix("to_subnet")
	ok = ok && fromOK && toOK
	r.FromSubnet, r.ToSubnet = from, to
	if fromOK {
		a := attrs["from_subnet"]
		if first, dup := seen[from]; dup {
			l.errorf(a.Expr.Range(), "Duplicate re-IP rule", "A re-IP rule for %s is already declared at %s.", from, first)
			ok = false
		} else {
			seen[from] = a.Expr.Range()
		}
	}
	if fromOK && toOK {
		switch {
		case from.Addr().Is4() != to.Addr().Is4():
			l.errorf(attrs["to_subnet"].Expr.Range(), "Mismatched subnets",
				"from_subnet %s and to_subnet %s must be of the same IP version.", from, to)
			ok = false
		case from.Bits() != to.Bits():
			l.errorf(attrs["to_subnet"].Expr.Range(), "Mismatched prefix lengths",
				"from_subnet %s and to_subnet %s must have the same prefix length: re-IP keeps the host part of each address.", from, to)
			ok = false
		}
	}
	if a, present := attrs["gateway"]; present {
		if s, good := evalString(a, l.ctx, &l.diags); good && s != "" {
			gw, err := parseAddr(s)
			switch {
			case err != nil:
				l.errorf(a.Expr.Range(), "Invalid gateway", "%s.", err)
				ok = false
			case toOK && !to.Contains(gw):
				l.errorf(a.Expr.Range(), "Gateway outside the subnet", "Gateway %s is not inside to_subnet %s.", gw, to)
				ok = false
			default:
				r.Gateway = gw
			}
		} else {
			ok = ok && good
		}
	}
	if a, present := attrs["dns"]; present {
		list, good := evalStringList(a, l.ctx, &l.diags)
		ok = ok && good
		for _, s := range list {
			addr, err := parseAddr(s.Value)
			if err != nil {
				l.errorf(s.Range, "Invalid DNS server", "%s.", err)
				ok = false
				continue
			}
			r.DNS = append(r.DNS, addr)
		}
	}
	return r, ok
}

// parseAddr reads an IP address without a zone.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%q has a zone (%%%s), which has no meaning on the replica's network", s, a.Zone())
	}
	return a, nil
}

// parseSubnet reads a subnet in CIDR notation whose host bits are zero.
func parseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a subnet in CIDR notation, like 10.1.0.0/16", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 subnet; write it as IPv4", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; the subnet is %s", s, m)
	}
	return p, nil
}

func (l *loader) transfer(b *hcl.Block) Transfer {
	t := Transfer{Compression: CompressionAuto, DeclRange: b.DefRange}
	content, diags := b.Body.Content(transferSchema)
	l.diags = append(l.diags, diags...)
	attrs := content.Attributes
	if a, ok := attrs["compression"]; ok {
		if s, ok := evalString(a, l.ctx, &l.diags); ok {
			if c := Compression(s); slices.Contains(compressions, c) {
				t.Compression = c
			} else {
				names := make([]string, len(compressions))
				for i, c := range compressions {
					names[i] = string(c)
				}
				l.errorf(a.Expr.Range(), "Invalid compression", "Compression %q is not one of %s.%s",
					s, strings.Join(names, ", "), didYouMeanQuoted(s, names))
			}
		}
	}
	if a, ok := attrs["throttle"]; ok {
		if s, ok := evalString(a, l.ctx, &l.diags); ok && s != "" {
			if rate, err := parseRate(s); err != nil {
				l.errorf(a.Expr.Range(), "Invalid throttle", "%s.", err)
			} else {
				t.Throttle = rate
			}
		}
	}
	if a, ok := attrs["max_tasks"]; ok {
		if n, set, ok := evalInt(a, l.ctx, &l.diags); ok && set {
			if n < 1 {
				l.errorf(a.Expr.Range(), "Invalid max_tasks", "A job copies at least 1 disk at a time; max_tasks is %d.", n)
			} else {
				t.MaxTasks = n
			}
		}
	}
	if a, ok := attrs["block_size"]; ok {
		t.BlockSize = l.blockSize(a)
	}
	return t
}

// blockSize reads a block size: a number of bytes or a size string.
func (l *loader) blockSize(a *hcl.Attribute) int64 {
	v, diags := a.Expr.Value(l.ctx)
	if diags.HasErrors() {
		l.diags = append(l.diags, diags...)
		return 0
	}
	var text string
	if v.Type() == cty.Number && v.IsKnown() && !v.IsNull() {
		text = v.AsBigFloat().Text('f', -1)
	} else if s, ok := evalString(a, l.ctx, &l.diags); ok && s != "" {
		text = s
	} else {
		return 0
	}
	n, err := parseSize(text)
	if err != nil {
		l.errorf(a.Expr.Range(), "Invalid block_size", "%s.", err)
		return 0
	}
	if n < MinBlockSize || n > MaxBlockSize || n&(n-1) != 0 {
		hint := ""
		if strings.HasSuffix(text, "KB") || strings.HasSuffix(text, "MB") {
			binary := strings.TrimSuffix(strings.TrimSuffix(text, "B"), " ") + "iB"
			if m, err := parseSize(binary); err == nil && m >= MinBlockSize && m <= MaxBlockSize && m&(m-1) == 0 {
				hint = fmt.Sprintf(" Did you mean %s? KB and MB are powers of 1000.", binary)
			}
		}
		l.errorf(a.Expr.Range(), "Invalid block_size",
			"block_size %q is %d bytes; it must be a power of two from %s to %s, such as 16KiB.%s",
			text, n, formatSize(MinBlockSize), formatSize(MaxBlockSize), hint)
		return 0
	}
	return n
}

// badSuffix says what makes a replica suffix unusable in a replica's
// name, or "" when nothing does: a path separator or ".." would climb out
// of a target's folder, a control character (NUL among them) is refused
// by every target.
func badSuffix(s string) string {
	if i := strings.IndexFunc(s, isControl); i >= 0 {
		return fmt.Sprintf("holds the control character %U", []rune(s[i:])[0])
	}
	if strings.ContainsAny(s, `/\`) {
		return "holds a path separator (/ or \\)"
	}
	if strings.Contains(s, "..") {
		return `holds ".."`
	}
	return ""
}
