package config

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/hashicorp/hcl/v2"
)

// SelectorKind says what a selector matches VMs by.
type SelectorKind string

// The selector kinds. A VM selector names one VM as the source resolves it
// (by id, inventory path or name); folder and tag selectors pick every VM
// the source reports in a folder (subfolders included) or with a tag.
const (
	SelectVM     SelectorKind = "vm"
	SelectFolder SelectorKind = "folder"
	SelectTag    SelectorKind = "tag"
)

// Selector is one entry of a job's vms or exclude list.
type Selector struct {
	Kind SelectorKind
	// Value is what the selector matches: the VM as written, the folder's
	// inventory path ("/Prod/vm/web", no trailing slash but for the root
	// "/"), or the tag: "Category/Name", or "Name" for that name in any
	// category.
	Value string
	Range hcl.Range // the list element, for diagnostics
}

// String renders the selector as it is written in a job: folder:PATH,
// tag:TAG, or the VM (vm:VM when the VM's name would read as a selector).
func (s Selector) String() string {
	switch s.Kind {
	case SelectFolder, SelectTag:
		return string(s.Kind) + ":" + s.Value
	}
	if back, err := ParseSelector(s.Value); err != nil || back.Kind != SelectVM || back.Value != s.Value {
		return "vm:" + s.Value
	}
	return s.Value
}

// TagCategory splits a tag selector's value: the category ("" for a name
// in any category) and the name.
func (s Selector) TagCategory() (category, name string) {
	if c, n, ok := strings.Cut(s.Value, "/"); ok {
		return c, n
	}
	return "", s.Value
}

// Matches reports whether a VM with the given folder and tags (as the
// sdk reports them: "Category/Name" or "Name") is picked by a folder or tag
// selector. A VM selector matches nothing here: the source resolves it.
func (s Selector) Matches(folder string, tags []string) bool {
	switch s.Kind {
	case SelectFolder:
		if folder == "" {
			return false
		}
		return s.Value == "/" || folder == s.Value || strings.HasPrefix(folder, s.Value+"/")
	case SelectTag:
		cat, name := s.TagCategory()
		for _, t := range tags {
			if cat != "" {
				if t == s.Value {
					return true
				}
				continue
			}
			if _, n, ok := strings.Cut(t, "/"); (ok && n == name) || (!ok && t == name) {
				return true
			}
		}
	}
	return false
}

// SelectorError is a selector that cannot be read.
type SelectorError struct {
	Summary, Detail string
}

func (e *SelectorError) Error() string { return e.Summary + ": " + e.Detail }

// selectorHelp lists the forms of an entry.
const selectorHelp = `An entry is a VM (by id, inventory path or name), folder:<inventory path> (every VM in the folder and its subfolders), tag:<category>/<name> or tag:<name> (every VM with the tag), or vm:<VM> for a VM whose name reads like a selector.`

// ParseSelector reads one entry of a vms or exclude list.
func ParseSelector(text string) (Selector, error) {
	if strings.TrimSpace(text) == "" {
		return Selector{}, &SelectorError{"Invalid VM name", "A VM name must not be empty."}
	}
	if i := strings.IndexFunc(text, isControl); i >= 0 {
		return Selector{}, &SelectorError{"Invalid VM entry",
			fmt.Sprintf("%q holds the control character %U; no VM, folder or tag name holds one, and no target accepts one in a replica's name.", text, []rune(text[i:])[0])}
	}
	kind, rest, found := strings.Cut(text, ":")
	if !found {
		return vmSelector(text)
	}
	switch SelectorKind(kind) {
	case SelectVM:
		if strings.TrimSpace(rest) == "" {
			return Selector{}, &SelectorError{"Invalid VM selector", `"vm:" needs a VM after it, like vm:web-01.`}
		}
		return vmSelector(rest)
	case SelectFolder:
		p, err := folderPath(rest)
		if err != nil {
			return Selector{}, err
		}
		return Selector{Kind: SelectFolder, Value: p}, nil
	case SelectTag:
		if err := checkTag(rest); err != nil {
			return Selector{}, err
		}
		return Selector{Kind: SelectTag, Value: rest}, nil
	}
	if k := likelyKind(kind); k != "" {
		return Selector{}, &SelectorError{"Unknown selector kind",
			fmt.Sprintf("%q is not a selector; did you mean %s:%s? %s", text, k, rest, selectorHelp)}
	}
	// A VM whose name holds a colon, such as "db:primary".
	return vmSelector(text)
}

// vmSelector names a VM by id, inventory path or name. A name or a path
// element "." or ".." names no VM, and in a replica's name it would climb
// out of a target's folder.
func vmSelector(vm string) (Selector, error) {
	for _, name := range strings.Split(vm, "/") {
		if name == "." || name == ".." {
			return Selector{}, &SelectorError{"Invalid VM name",
				fmt.Sprintf("%q has a . or .. name, which VM names and inventory paths do not have.", vm)}
		}
	}
	return Selector{Kind: SelectVM, Value: vm}, nil
}

// isControl reports a control character: NUL, the C0 controls and DEL
// (and the C1 controls); targets refuse them in names.
func isControl(r rune) bool { return unicode.IsControl(r) }

// likelyKind returns the selector kind a prefix was probably meant to be:
// the same word in other case, or a close misspelling of folder or tag.
func likelyKind(prefix string) SelectorKind {
	if !isWord(prefix) {
		return ""
	}
	w := strings.ToLower(prefix)
	for _, k := range []SelectorKind{SelectFolder, SelectTag, SelectVM} {
		if w == string(k) {
			return k
		}
	}
	switch {
	case editDistance(w, string(SelectFolder)) <= 2:
		return SelectFolder
	case len(w) >= 3 && editDistance(w, string(SelectTag)) <= 1:
		return SelectTag
	}
	return ""
}

func isWord(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && r != '_' && r != '-' {
			return false
		}
	}
	return true
}

// folderPath checks and cleans the path of a folder selector.
func folderPath(p string) (string, error) {
	bad := func(why string) error {
		return &SelectorError{"Invalid folder selector", fmt.Sprintf("folder:%s %s; write the folder's inventory path, like folder:/Prod/vm/web.", p, why)}
	}
	switch {
	case p == "":
		return "", bad("names no folder")
	case strings.TrimSpace(p) != p:
		return "", bad("has spaces around the path")
	case !strings.HasPrefix(p, "/"):
		return "", bad("is not an inventory path: it must start at the root of the inventory, with /")
	}
	if p != "/" {
		p = strings.TrimSuffix(p, "/")
	}
	if p == "/" {
		return p, nil
	}
	for _, name := range strings.Split(p[1:], "/") {
		switch name {
		case "":
			return "", bad("has an empty folder name (//)")
		case ".", "..":
			return "", bad("has a . or .. name, which inventory paths do not have")
		}
		if strings.TrimSpace(name) != name {
			return "", bad(fmt.Sprintf("has spaces around the name %q", name))
		}
	}
	return p, nil
}

// checkTag checks the value of a tag selector.
func checkTag(tag string) error {
	bad := func(why string) error {
		return &SelectorError{"Invalid tag selector", fmt.Sprintf("tag:%s %s; write tag:<category>/<name>, like tag:tier/gold, or tag:<name> for that name in any category.", tag, why)}
	}
	cat, name, hasCat := strings.Cut(tag, "/")
	switch {
	case tag == "":
		return bad("names no tag")
	case strings.TrimSpace(tag) != tag:
		return bad("has spaces around the tag")
	case hasCat && (cat == "" || name == ""):
		return bad("has an empty category or name")
	case hasCat && (strings.TrimSpace(cat) != cat || strings.TrimSpace(name) != name):
		return bad("has spaces around the category or name")
	}
	return nil
}

// selectorKey identifies a selector for finding duplicates.
func selectorKey(s Selector) string { return string(s.Kind) + "\x00" + s.Value }

// selectors reads a job's vms (exclude false) or exclude list. It reports
// entries that do not parse, duplicates, and entries of exclude that vms
// lists too (seen holds the vms entries when reading exclude).
func (l *loader) selectors(j *Job, a *hcl.Attribute, exclude bool, seen map[string]hcl.Range) []Selector {
	list, ok := evalStringList(a, l.ctx, &l.diags)
	if !ok {
		return nil
	}
	if len(list) == 0 && !exclude {
		l.errorf(a.Expr.Range(), "No VMs",
			"Job %q names no VMs; list VMs or selectors, like vms = [\"web-01\"] or vms = [\"folder:/Prod/vm/web\"].", j.Name)
		return nil
	}
	mine := map[string]hcl.Range{}
	var out []Selector
	for _, e := range list {
		sel, err := ParseSelector(e.Value)
		if err != nil {
			se := err.(*SelectorError)
			l.errorf(e.Range, se.Summary, "%s", se.Detail)
			continue
		}
		sel.Range = e.Range
		key := selectorKey(sel)
		if first, dup := mine[key]; dup {
			if sel.Kind == SelectVM {
				l.errorf(e.Range, "Duplicate VM", "VM %q is already listed at %s; each VM appears once in %s.", sel.Value, first, listName(exclude))
			} else {
				l.errorf(e.Range, "Duplicate selector", "Selector %q is already listed at %s.", sel.String(), first)
			}
			continue
		}
		if first, both := seen[key]; both && exclude {
			l.errorf(e.Range, "Selected and excluded", "%q is in vms at %s and in exclude; an excluded VM is never replicated, so list it in one of them.", sel.String(), first)
			continue
		}
		mine[key] = e.Range
		out = append(out, sel)
	}
	if !exclude {
		for k, r := range mine {
			seen[k] = r
		}
	}
	return out
}

// checkSelectors reports folder and tag selectors the job's source cannot
// serve, when its plugin says what it can.
func (l *loader) checkSelectors(j *Job) {
	if j.Source == nil || j.Source.Info == nil {
		return
	}
	caps := j.Source.Info.Capabilities
	for _, list := range [][]Selector{j.Selectors, j.Exclude} {
		for _, s := range list {
			switch {
			case s.Kind == SelectFolder && !caps.Folders:
				l.errorf(s.Range, "Source has no folders",
					"%s (type %q) does not report the folders of its VMs, so %s cannot match any; name the VMs instead.", j.Source.Address(), j.Source.Type, s)
			case s.Kind == SelectTag && !caps.Tags:
				l.errorf(s.Range, "Source has no tags",
					"%s (type %q) does not report the tags of its VMs, so %s cannot match any; name the VMs instead.", j.Source.Address(), j.Source.Type, s)
			}
		}
	}
}

// checkRetentionLimit reports a retention beyond what the job's target
// keeps, when its plugin declares a limit.
func (l *loader) checkRetentionLimit(j *Job) {
	if j.Target == nil || j.Target.Info == nil {
		return
	}
	lim := j.Target.Info.Limits
	if lim.MaxRestorePoints <= 0 || j.Retention.RestorePoints <= lim.MaxRestorePoints {
		return
	}
	subject, asked := j.Retention.Range, fmt.Sprintf("keeps %d restore points per replica", j.Retention.RestorePoints)
	if subject == (hcl.Range{}) {
		subject, asked = j.DeclRange, fmt.Sprintf("keeps the default of %d restore points per replica", j.Retention.RestorePoints)
	}
	reason := strings.TrimSuffix(lim.MaxRestorePointsReason, ".")
	if reason != "" {
		reason = ": " + reason
	}
	l.errorf(subject, "Too many restore points",
		"Job %q %s, but %s (type %q) keeps at most %d%s. Set retention { restore_points = %d } or fewer.",
		j.Name, asked, j.Target.Address(), j.Target.Type, lim.MaxRestorePoints, reason, lim.MaxRestorePoints)
}

func listName(exclude bool) string {
	if exclude {
		return "exclude"
	}
	return "a job"
}
