package lab

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The names the lab owns in its folder. Nothing else in the folder is
// ever written or removed.
const (
	stateFile  = "lab.json"
	socketFile = "lab.sock"
	logFile    = "lab.log"
	configDir  = "config"
	repoDir    = "repository"
	sitesDir   = "sites"
	// hypervDir, under sitesDir, is the mixed lab's simulated Hyper-V
	// host.
	hypervDir = "hyperv-dr"
)

// stateVersion is the format of lab.json.
const stateVersion = 1

// State is lab.json: what a running lab is and how to reach it. The
// server writes it once it is ready; `down` removes it last.
type State struct {
	Version int       `json:"version"`
	PID     int       `json:"pid"`    // the server process
	Socket  string    `json:"socket"` // its control socket
	Started time.Time `json:"started"`
	Config  string    `json:"config"` // the configuration folder
	Job     string    `json:"job"`
	// DR is the kind of the dr site: drVSphere ("" in a lab.json from
	// before there was a choice) or drHyperV.
	DR    string     `json:"dr,omitempty"`
	Sites []SiteInfo `json:"sites"`
	VMs   []string   `json:"vms"` // the production VMs
}

// SiteInfo is one simulated vCenter of the lab.
type SiteInfo struct {
	Name string `json:"name"` // prod or dr
	// Kind is "" for a simulated vCenter, siteHyperVSim for a simulated
	// Hyper-V host (URL is then "sim:DIR", DatastorePath DIR, and the
	// rest is empty).
	Kind          string `json:"kind,omitempty"`
	URL           string `json:"url"`
	Username      string `json:"username"`
	Thumbprint    string `json:"thumbprint"`
	CAFile        string `json:"ca_file"` // its certificate, PEM, in the configuration folder
	Datacenter    string `json:"datacenter"`
	Datastore     string `json:"datastore"`
	DatastorePath string `json:"datastore_path"` // the folder holding the datastore's files
}

// errNoLab is a lab folder without lab.json.
var errNoLab = errors.New("no lab")

// loadState reads dir/lab.json; errNoLab when there is none.
func loadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, classf(errdefs.ErrNotFound, "%w in %s (no %s)", errNoLab, dir, stateFile)
	}
	if err != nil {
		return nil, fmt.Errorf("read the lab state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, classf(errdefs.ErrFailedPrecondition, "the lab state %s is damaged: %w; remove the folder's lab files by hand", filepath.Join(dir, stateFile), err)
	}
	if st.Version != stateVersion {
		return nil, classf(errdefs.ErrFailedPrecondition, "the lab state %s has version %d, this ferry-lab-vsphere knows %d", filepath.Join(dir, stateFile), st.Version, stateVersion)
	}
	return &st, nil
}

// writeFile replaces a file atomically: a reader sees the old content or
// the new, never a part.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func saveState(dir string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, stateFile), append(b, '\n'), 0o600)
}

// socketPath is where the server of a lab in dir listens. A unix socket
// path is limited to about 100 bytes, so a deep folder gets one in the
// temporary folder, named after the lab folder.
func socketPath(dir string) string {
	p := filepath.Join(dir, socketFile)
	if len(p) < 100 {
		return p
	}
	sum := sha256.Sum256([]byte(dir))
	return filepath.Join(os.TempDir(), fmt.Sprintf("ferry-lab-%x.sock", sum[:6]))
}

// checkFolder says whether up may use dir: it does not exist, is empty,
// or holds only what a lab leaves (lab.json of a lab that is not running,
// or the log of an up that failed). It returns whether lab.json is there.
func checkFolder(dir string) (hasState bool, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lab folder %s: %w", dir, err)
	}
	var foreign []string
	for _, e := range entries {
		switch e.Name() {
		case stateFile:
			hasState = true
		case logFile:
		default:
			foreign = append(foreign, e.Name())
		}
	}
	if !hasState && len(foreign) > 0 {
		return false, classf(errdefs.ErrFailedPrecondition, "lab folder %s is not empty and holds no lab (%s, no %s): choose another --dir", dir, strings.Join(foreign, ", "), stateFile)
	}
	return hasState, nil
}

// removeLab removes what a lab made in dir (but its log when keepLog),
// and dir itself when that leaves it empty. The socket of a deep folder
// lives elsewhere.
func removeLab(dir string, st *State, keepLog bool) error {
	var errs []error
	for _, name := range []string{configDir, repoDir, sitesDir, socketFile, logFile, stateFile} {
		if name == logFile && keepLog {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	sockets := []string{socketPath(dir)}
	if st != nil {
		sockets = append(sockets, st.Socket)
	}
	for _, sock := range sockets {
		if sock != "" && filepath.Dir(sock) != dir && strings.HasPrefix(filepath.Base(sock), "ferry-lab-") && strings.HasSuffix(sock, ".sock") {
			if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	os.Remove(dir) // only when empty: other files are not the lab's
	return errors.Join(errs...)
}

// alive reports whether a process exists and has not exited. An exited
// process that nobody reaped (a zombie) counts as gone.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// pid (comm) state ...: comm may hold spaces and parentheses.
		if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return false
		}
	}
	return true
}

// isServer reports whether pid runs the server of the lab in dir, by its
// command line ("... serve --dir DIR ..."). Where /proc is missing it
// cannot tell, and says no: the lab never signals a process it is not
// sure it started.
func isServer(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	serve, inDir := false, false
	for i, a := range args {
		if a == "serve" {
			serve = true
		}
		if a == "--dir" && i+1 < len(args) && args[i+1] == dir {
			inDir = true
		}
	}
	return serve && inDir
}

// waitGone waits until pid has exited, up to timeout.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
