package config

import (
	"cmp"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/ferry-dr/ferry/sdk"
)

// rootSchema is what a configuration file may contain at its top level.
var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: string(sdk.KindSource), LabelNames: []string{"type", "name"}},
		{Type: string(sdk.KindTarget), LabelNames: []string{"type", "name"}},
		{Type: string(sdk.KindRepository), LabelNames: []string{"type", "name"}},
		{Type: "proxy", LabelNames: []string{"name"}},
		{Type: "job", LabelNames: []string{"name"}},
		{Type: "traffic_rule", LabelNames: []string{"name"}},
		{Type: "webhook", LabelNames: []string{"name"}},
		{Type: "failover_plan", LabelNames: []string{"name"}},
	},
}

// Load reads the configuration in folder dir: every file whose name ends in
// .hcl (hidden files, starting with ".", excepted), in name order, each
// named in diagnostics by its path joined to dir. It reads only regular
// files (symbolic links to them included) of at most MaxFileSize bytes,
// and parses none nested deeper than MaxNesting. schemas gives the schemas
// of plugin blocks; it may be nil when no plugin is installed.
//
// Load returns every problem it finds at once. The Config is never nil: it
// holds Dir, Files (for rendering the diagnostics) and whatever could be
// decoded, and must not be acted on when the diagnostics have errors.
func Load(dir string, schemas Schemas) (*Config, hcl.Diagnostics) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return newConfig(abs), hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read the configuration folder",
			Detail:   fmt.Sprintf("Reading %s failed: %s.", dir, err),
		}}
	}
	files := map[string][]byte{}
	var diags hcl.Diagnostics
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".hcl") || strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(dir, name)
		if info, err := os.Stat(path); err == nil && info.IsDir() {
			continue
		}
		src, d := readFile(path)
		if d != nil {
			diags = append(diags, d)
			continue
		}
		files[path] = src
	}
	if len(files) == 0 && !diags.HasErrors() {
		return newConfig(abs), hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "No configuration files",
			Detail:   fmt.Sprintf("The folder %s has no *.hcl files.", dir),
		}}
	}
	cfg, more := LoadFiles(abs, files, schemas)
	return cfg, append(diags, more...)
}

// LoadFiles is Load for files held in memory, by file name; it reads them
// in name order. dir becomes Config.Dir as given.
func LoadFiles(dir string, files map[string][]byte, schemas Schemas) (*Config, hcl.Diagnostics) {
	l := &loader{
		cfg:     newConfig(dir),
		schemas: schemas,
		ctx:     evalContext(),
		decls:   map[string]hcl.Range{},
	}
	var blocks []*hcl.Block
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if len(files[name]) > MaxFileSize {
			l.diags = append(l.diags, tooLarge(name))
			l.incomplete = true
			continue
		}
		if d := checkNesting(files[name], name, MaxNesting); d != nil {
			// Parsing it would overflow the parser's stack.
			l.diags = append(l.diags, d)
			l.incomplete = true
			continue
		}
		f, diags := hclsyntax.ParseConfig(files[name], name, hcl.InitialPos)
		l.diags = append(l.diags, diags...)
		if f == nil {
			l.incomplete = true
			continue
		}
		l.cfg.Files[name] = f
		if diags.HasErrors() {
			// Its syntax errors are shown with snippets: mask what may
			// be sensitive values first.
			l.cfg.sensitive = append(l.cfg.sensitive, l.unparsedSensitiveRanges(files[name], name)...)
			// A file that does not parse may declare blocks that other
			// files refer to; its partial body would only add noise.
			l.incomplete = true
			continue
		}
		content, diags := f.Body.Content(rootSchema)
		l.diags = append(l.diags, diags...)
		blocks = append(blocks, content.Blocks...)
	}

	var jobs, rules, plans []*hcl.Block
	for _, b := range blocks {
		if !l.declare(b) {
			continue
		}
		switch b.Type {
		case "source", "target", "repository":
			pb := l.decodePluginBlock(sdk.Kind(b.Type), b)
			l.pluginMap(pb.Kind)[pb.Type+"."+pb.Name] = pb
		case "proxy":
			p := l.decodeProxy(b)
			l.cfg.Proxies[p.Name] = p
		case "job":
			jobs = append(jobs, b) // after all blocks they refer to
		case "traffic_rule":
			rules = append(rules, b) // after the proxies, whose sites they may name
		case "webhook":
			if w, ok := l.decodeWebhook(b); ok {
				l.cfg.Webhooks = append(l.cfg.Webhooks, w)
			}
		case "failover_plan":
			plans = append(plans, b) // after the jobs, whose VMs they name
		}
	}
	for _, b := range jobs {
		j := l.decodeJob(b)
		l.cfg.Jobs[j.Name] = j
	}
	for _, b := range rules {
		if r, ok := l.decodeTrafficRule(b); ok {
			l.cfg.TrafficRules = append(l.cfg.TrafficRules, r)
		}
	}
	for _, b := range plans {
		if p, ok := l.decodeFailoverPlan(b); ok {
			l.cfg.FailoverPlans[p.Name] = p
		}
	}
	l.checkPlanOrders()
	l.checkReplicaNames()
	sortDiagnostics(l.diags)
	return l.cfg, l.diags
}

func newConfig(dir string) *Config {
	return &Config{
		Dir:          dir,
		Files:        map[string]*hcl.File{},
		Sources:      map[string]*PluginBlock{},
		Targets:      map[string]*PluginBlock{},
		Repositories: map[string]*PluginBlock{},
		Proxies:      map[string]*Proxy{},
		Jobs:         map[string]*Job{},

		FailoverPlans: map[string]*FailoverPlan{},
	}
}

// loader holds the state of one Load.
type loader struct {
	cfg     *Config
	schemas Schemas
	ctx     *hcl.EvalContext
	diags   hcl.Diagnostics
	// incomplete is set when a file did not parse: references to blocks
	// that are not declared may point into it and are not reported.
	incomplete bool
	decls      map[string]hcl.Range // block address -> where it is declared
}

func (l *loader) errorf(subject hcl.Range, summary, detailFormat string, args ...any) {
	l.diags = append(l.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(detailFormat, args...),
		Subject:  subject.Ptr(),
	})
}

func (l *loader) pluginMap(kind sdk.Kind) map[string]*PluginBlock {
	switch kind {
	case sdk.KindSource:
		return l.cfg.Sources
	case sdk.KindTarget:
		return l.cfg.Targets
	default:
		return l.cfg.Repositories
	}
}

// declare checks a block's labels and that its address is new. It returns
// false for a duplicate, which is reported and not decoded.
func (l *loader) declare(b *hcl.Block) bool {
	for i, label := range b.Labels {
		if !hclsyntax.ValidIdentifier(label) {
			l.errorf(b.LabelRanges[i], "Invalid block name",
				"%q is not a valid name: a name starts with a letter or underscore and holds only letters, digits, underscores and dashes, so that it can be referred to.", label)
		}
	}
	addr := b.Type + "." + strings.Join(b.Labels, ".")
	if first, dup := l.decls[addr]; dup {
		what := fmt.Sprintf("%s %q", b.Type, b.Labels[len(b.Labels)-1])
		if len(b.Labels) == 2 {
			what = fmt.Sprintf("%s %q %q", b.Type, b.Labels[0], b.Labels[1])
		}
		l.errorf(b.DefRange, "Duplicate "+b.Type+" block",
			"A %s block was already declared at %s. %s", what, first, uniqueRule(b))
		return false
	}
	l.decls[addr] = b.DefRange
	return true
}

func uniqueRule(b *hcl.Block) string {
	switch b.Type {
	case "source", "target", "repository":
		return fmt.Sprintf("Names must be unique among the %s blocks of type %q.", b.Type, b.Labels[0])
	case "proxy":
		return "Names must be unique among proxies."
	case "traffic_rule":
		return "Names must be unique among traffic rules."
	case "webhook":
		return "Names must be unique among webhooks."
	case "failover_plan":
		return "Names must be unique among failover plans."
	}
	return "Names must be unique among jobs."
}

// sortDiagnostics orders diagnostics by where they point, those without a
// place first, keeping the order of diagnostics at the same place.
func sortDiagnostics(diags hcl.Diagnostics) {
	slices.SortStableFunc(diags, func(a, b *hcl.Diagnostic) int {
		switch {
		case a.Subject == nil && b.Subject == nil:
			return 0
		case a.Subject == nil:
			return -1
		case b.Subject == nil:
			return 1
		}
		return cmp.Or(
			cmp.Compare(a.Subject.Filename, b.Subject.Filename),
			cmp.Compare(a.Subject.Start.Byte, b.Subject.Start.Byte),
		)
	})
}
