package pluginhost

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Prefix starts the file name of every plugin binary.
const Prefix = "ferry-plugin-"

// Found is a plugin binary discovery found.
type Found struct {
	Name     string // the part after ferry-plugin-
	Path     string
	Shadowed bool // an earlier folder has a plugin of the same name
}

// SearchPath returns the folders searched for plugins, in order.
// configDir is the configuration folder ("" when there is none); a folder
// that does not exist is kept, so a listing can say where it looked.
func SearchPath(configDir string) []string {
	var dirs []string
	if configDir != "" {
		dirs = append(dirs, filepath.Join(configDir, "plugins"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".ferry", "plugins"))
	}
	for _, d := range filepath.SplitList(os.Getenv("FERRY_PLUGIN_PATH")) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dirs = append(dirs, filepath.Dir(exe))
	}
	return dedupe(dirs)
}

func dedupe(dirs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range dirs {
		if abs, err := filepath.Abs(d); err == nil {
			d = abs
		}
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// Discover lists the plugin binaries in dirs, sorted by name with the
// winning binary of each name first.
func Discover(dirs []string) []Found {
	var out []Found
	seen := map[string]bool{}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name, ok := pluginName(e.Name())
			if !ok {
				continue
			}
			path := filepath.Join(dir, e.Name())
			if !isExecutable(path) {
				continue
			}
			out = append(out, Found{Name: name, Path: path, Shadowed: seen[name]})
			seen[name] = true
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// pluginName returns the plugin name of a file name, if it is one.
func pluginName(file string) (string, bool) {
	if !strings.HasPrefix(file, Prefix) {
		return "", false
	}
	name := strings.TrimSuffix(strings.TrimPrefix(file, Prefix), ".exe")
	if name == "" || strings.ContainsAny(name, ". ") {
		return "", false
	}
	return name, true
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
