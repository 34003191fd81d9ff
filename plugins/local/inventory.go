package local

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// A local VM's inventory folder and tags are what its vm.json says: a site
// has no folder tree or tag catalog of its own. A VM whose vm.json names
// no folder is in the site's root folder, "/"; the site's tags are those
// its VMs carry.

// rootFolder is the folder of a VM that names none.
const rootFolder = "/"

// checkInventoryFolder checks a VM's folder: an absolute path of non-empty names.
func checkInventoryFolder(p string) error {
	bad := func(why string) error {
		return fmt.Errorf("folder %q %s; write a path from the root, like /prod/web: %w", p, why, errdefs.ErrInvalidArgument)
	}
	switch {
	case !strings.HasPrefix(p, "/"):
		return bad("does not start at the root (/)")
	case p != rootFolder && strings.HasSuffix(p, "/"):
		return bad("ends in /")
	}
	if p == rootFolder {
		return nil
	}
	for _, name := range strings.Split(p[1:], "/") {
		if name == "" || name == "." || name == ".." || strings.TrimSpace(name) != name {
			return bad(fmt.Sprintf("has a bad name %q", name))
		}
	}
	return nil
}

// checkTag checks a tag: "Category/Name" or "Name", no empty part, no
// spaces around a part.
func checkTag(tag string) error {
	parts := []string{tag}
	if cat, name, hasCat := strings.Cut(tag, "/"); hasCat {
		parts = []string{cat, name}
	}
	for _, p := range parts {
		if p == "" || strings.TrimSpace(p) != p {
			return fmt.Errorf("tag %q is not Category/Name or Name: %w", tag, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// normalTags sorts tags and drops repeats, as sdk.VM.Tags are.
func normalTags(tags []string) []string {
	if len(tags) == 0 {
		return nil
	}
	out := slices.Clone(tags)
	slices.Sort(out)
	return slices.Compact(out)
}

// listTags lists the tags the site's VMs carry, sorted.
func (s *site) listTags() ([]string, error) {
	vms, err := s.scan()
	if err != nil {
		return nil, err
	}
	tags := []string{}
	for _, v := range vms {
		tags = append(tags, v.vm.Tags...)
	}
	return normalTags(tags), nil
}
