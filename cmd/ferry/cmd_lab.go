package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/ferry-dr/ferry/core/pluginhost"
)

func init() {
	register(&command{
		name: "lab",
		summary: `Run a local two-site lab on simulators, to try ferry without a vCenter or a Hyper-V host.

  ferry lab up [--dir DIR]           start two simulated vCenters, prod and dr,
                                     with VMs holding data on prod, and write a
                                     configuration for them in DIR/config
  ferry lab up --dr hyperv           the mixed lab: prod is a simulated vCenter,
                                     dr a simulated Hyper-V host (not Hyper-V:
                                     VMs as folders with VHDX disks), so a
                                     VMware VM fails over onto Hyper-V
  ferry lab write [--dir DIR] VM     change some of a prod VM's data as its
                                     guest would (--disk N, --count N)
  ferry lab status [--dir DIR]       the VMs of both sites as the simulators
                                     report them (--json)
  ferry lab verify [--dir DIR] VM    compare a prod VM's disks with its
                                     replica's, byte for byte (--json)
  ferry lab down [--dir DIR]         stop the lab and remove its files

DIR is ~/.ferry/lab by default. The lab is the program ferry-lab-vsphere,
which 'make build' puts beside ferry; ferry looks for it in its own
folder, then on the plugin search path, and runs it with these arguments.
'ferry lab up' first checks that ferry finds the plugins the lab's
configuration needs (vsphere and local, and hyperv for the mixed lab).`,
		usage: "ferry lab up|write|status|verify|down [--dir DIR] [arguments]",
		setup: noFlags(runLab),
		// The lab program parses them, flags included.
		raw: true,
		complete: func(_ string, args []string) []string {
			if len(args) == 0 {
				return []string{"up", "write", "status", "verify", "down"}
			}
			if args[0] == "up" && len(args) > 1 && args[len(args)-1] == "--dr" {
				return []string{labDRVSphere, labDRHyperV}
			}
			return nil
		},
	})
}

// labProgram is the program behind `ferry lab`. It runs the simulator, so
// it lives in the vsphere plugin's tree; ferry never imports it.
const labProgram = "ferry-lab-vsphere"

// labPlugins are the plugins the lab's configuration uses.
var labPlugins = []string{"vsphere", "local"}

// The kinds of dr site of 'ferry lab up --dr'; the mixed lab's
// configuration uses the hyperv plugin too.
const (
	labDRVSphere = "vsphere"
	labDRHyperV  = "hyperv"
)

// labPluginsFor are the plugins the configuration of 'ferry lab up args'
// uses.
func labPluginsFor(args []string) []string {
	for i, a := range args {
		if a == "--dr="+labDRHyperV || a == "-dr="+labDRHyperV || (a == "--dr" || a == "-dr") && i+1 < len(args) && args[i+1] == labDRHyperV {
			return append(slices.Clone(labPlugins), "hyperv")
		}
	}
	return labPlugins
}

func runLab(e *env, args []string) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help") {
		// ferry's own help, even without the lab program; 'ferry lab
		// VERB -h' is the lab's.
		commands["lab"].help(e.stdout, nil)
		return nil
	}
	prog, looked := findLab()
	if prog == "" {
		return fmt.Errorf("%s is not in %s; 'make build' puts it beside ferry", labProgram, strings.Join(looked, ", "))
	}
	if len(args) > 0 && args[0] == "up" {
		if err := checkLabPlugins(labPluginsFor(args[1:])); err != nil {
			return err
		}
	}
	cmd := exec.Command(prog, args...)
	cmd.Stdout, cmd.Stderr = e.stdout, e.stderr
	if o, ok := e.stdout.(*output); ok {
		// The lab writes to ferry's standard output itself, after what
		// ferry printed, and handles a reader that goes away on its own.
		cmd.Stdout = o.direct()
	}
	cmd.Env = os.Environ()
	if self, err := os.Executable(); err == nil {
		// So that the lab prints commands that run this ferry.
		cmd.Env = append(cmd.Env, "FERRY_EXECUTABLE="+self)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", prog, err)
	}
	// The lab cleans up on a signal: pass them on and wait for it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	signal.Stop(sigs)
	close(done)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		// The lab said what went wrong.
		if code := ee.ExitCode(); code > 0 {
			return &exitError{code: code}
		}
		return &exitError{code: exitFailure}
	}
	if err != nil {
		return fmt.Errorf("run %s: %w", prog, err)
	}
	return nil
}

// findLab looks for the lab program in the folder of the ferry binary,
// then on the plugin search path; it returns the folders it looked in.
// (The lab runs on Unix only: there is no .exe to look for.)
func findLab() (string, []string) {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dirs = append(dirs, filepath.Dir(exe))
	}
	seen := map[string]bool{}
	var looked []string
	for _, d := range append(dirs, pluginhost.SearchPath("")...) {
		if seen[d] {
			continue
		}
		seen[d] = true
		looked = append(looked, d)
		p := filepath.Join(d, labProgram)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, looked
		}
	}
	return "", looked
}

// checkLabPlugins fails when ferry would not find the plugins of the
// lab's configuration. The lab writes a fresh configuration folder, so
// only the search path outside it counts.
func checkLabPlugins(plugins []string) error {
	dirs := pluginhost.SearchPath("")
	found := map[string]bool{}
	for _, f := range pluginhost.Discover(dirs) {
		found[f.Name] = true
	}
	var missing []string
	for _, p := range plugins {
		if !found[p] {
			missing = append(missing, pluginhost.Prefix+p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the lab's configuration needs the plugins %s, and ferry finds no %s in %s; 'make build' puts them beside ferry",
			strings.Join(plugins, ", "), strings.Join(missing, " or "), strings.Join(dirs, ", "))
	}
	return nil
}
