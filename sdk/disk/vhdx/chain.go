package vhdx

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// parentCandidates lists where a parent locator says the parent is, in the
// order Hyper-V tries them: the path relative to the child's folder, the
// volume path, the absolute path. Windows paths are only meaningful on
// Windows; elsewhere the absolute path's file name is looked for next to
// the child, which is where a copied chain puts it.
func parentCandidates(childPath string, kv map[string]string) []string {
	dir := filepath.Dir(childPath)
	windows := runtime.GOOS == "windows"
	var out []string
	if rel := kv["relative_path"]; rel != "" {
		out = append(out, filepath.Join(dir, filepath.FromSlash(strings.ReplaceAll(rel, `\`, "/"))))
	}
	if vol := kv["volume_path"]; vol != "" && windows {
		out = append(out, vol)
	}
	if abs := kv["absolute_win32_path"]; abs != "" {
		if windows {
			out = append(out, abs)
		} else if i := strings.LastIndexAny(abs, `\/`); i+1 < len(abs) {
			out = append(out, filepath.Join(dir, abs[i+1:]))
		}
	}
	return out
}

// openVHDXParent opens the parent of the differencing VHDX v (at path)
// and checks that it is still the disk v was created on.
func openVHDXParent(path string, v *vhdxFile, chain []os.FileInfo) (*Image, error) {
	kv := v.p.parent
	var want []GUID
	for _, k := range []string{"parent_linkage", "parent_linkage2"} {
		if s, ok := kv[k]; ok {
			g, err := ParseGUID(s)
			if err != nil {
				return nil, inFile(path, corrupt("parent locator "+k, "%v", err))
			}
			want = append(want, g)
		}
	}
	candidates := parentCandidates(path, kv)
	var tried []string
	for _, c := range candidates {
		parent, err := open(c, os.O_RDONLY, chain)
		if errors.Is(err, fs.ErrNotExist) {
			tried = append(tried, c)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open parent of %q: %w", path, err)
		}
		info := parent.Info()
		if info.Format != FormatVHDX {
			parent.Close()
			return nil, fmt.Errorf("open parent of %q: %q is %s, not VHDX: %w", path, c, info.Format, ErrParentMismatch)
		}
		for _, g := range want {
			if g == info.DataWriteGUID {
				return parent, nil
			}
		}
		parent.Close()
		return nil, fmt.Errorf("open parent of %q: %q has DataWriteGuid %s, the child's parent_linkage is %s (the parent was written to after the child was made): %w",
			path, c, info.DataWriteGUID, kv["parent_linkage"], ErrParentMismatch)
	}
	return nil, fmt.Errorf("open parent of %q: tried %q: %w", path, tried, ErrParentNotFound)
}
