package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

var cmdUp = &command{
	usage: "ferry lab up [--dir DIR] [--dr vsphere|hyperv]",
	help: `Starts the lab in DIR (~/.ferry/lab by default): a server process, in the
background and detached from the terminal, runs two simulated vCenters,
prod and dr, on loopback. Prod has three powered-on VMs whose disks hold
generated disk-like data; dr has a "DR Network". DIR/config/lab.hcl is a
configuration for them: a vsphere source and target over verified TLS, a
local repository, and job "lab" with a network map and re-IP rules.
'up' waits until the lab is ready (two minutes at most) and prints how to
use it. The server logs to DIR/lab.log and runs until 'ferry lab down'.

With --dr hyperv it starts the mixed lab: prod is a simulated vCenter
with two VMs (web-01, BIOS Linux on paravirtual SCSI; app-01, EFI
Windows on LSI Logic SAS), dr a simulated Hyper-V host (a folder of VMs
with VHDX disks, for tests and this lab; it is not Hyper-V) with a
"DR Switch". Job "lab" replicates the VMs onto it with the hyperv plugin:
'ferry plan' shows how each replica's hardware differs from its VM's.`,
	flags: drFlag,
	run:   runUp,
}

// upTimeout bounds the wait for the server to be ready.
const upTimeout = 2 * time.Minute

func runUp(ctx context.Context, c *call) error {
	dir := c.dir
	hasState, err := checkFolder(dir)
	if err != nil {
		return err
	}
	if hasState {
		if err := clearStale(ctx, c, dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("lab folder %s: %w", dir, err)
	}
	st, err := start(ctx, dir, c.drKind)
	if err != nil {
		return err
	}
	printUp(c.stdout, dir, st)
	return nil
}

// clearStale deals with a lab.json in dir: a running lab is an error; the
// files of one whose server is gone are removed (its server stopped, if
// it is still there but does not answer).
func clearStale(ctx context.Context, c *call, dir string) error {
	st, err := loadState(dir)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := ask(pctx, st.Socket, request{Op: opPing})
	cancel()
	if err == nil {
		return classf(errdefs.ErrAlreadyExists, "a lab is already running in %s (server pid %d, up since %s); stop it first with '%s'",
			dir, resp.PID, st.Started.Local().Format(time.DateTime), labCommand(dir, "down"))
	}
	fmt.Fprintf(c.stderr, "ferry lab: the lab in %s was not stopped with 'ferry lab down' and its server does not answer; removing its files\n", dir)
	if alive(st.PID) && isServer(st.PID, dir) {
		stopProcess(st.PID)
	}
	return removeLab(dir, st, false)
}

// stopProcess ends a server that does not answer: SIGTERM, then SIGKILL.
func stopProcess(pid int) {
	syscall.Kill(pid, syscall.SIGTERM)
	if !waitGone(pid, 15*time.Second) {
		syscall.Kill(pid, syscall.SIGKILL)
		waitGone(pid, 5*time.Second)
	}
}

// start runs the server detached (its own session, no terminal, output to
// lab.log) and waits for it to report on a pipe that it is ready, or why
// it is not.
func start(ctx context.Context, dir, drKind string) (*State, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find ferry-lab-vsphere itself: %w", err)
	}
	logPath := filepath.Join(dir, logFile)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lab log: %w", err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command(exe, "serve", "--dir", dir, "--dr", drKind, "--socket", socketPath(dir), "--ready-fd", "3")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = dir
	err = cmd.Start()
	w.Close()
	if err != nil {
		return nil, fmt.Errorf("start the lab's server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	type ready struct {
		resp response
		err  error
	}
	got := make(chan ready, 1)
	go func() {
		var resp response
		err := json.NewDecoder(r).Decode(&resp)
		got <- ready{resp, err}
	}()
	timer := time.NewTimer(upTimeout)
	defer timer.Stop()
	fail := func(why error) (*State, error) {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		removeLab(dir, nil, true)
		msg := fmt.Sprintf("the lab in %s did not start: %v", dir, why)
		if t := tail(logPath, 15); t != "" {
			msg += fmt.Sprintf("\nthe end of its log, %s:\n%s", logPath, indent(t))
		}
		return nil, errors.New(msg)
	}
	select {
	case g := <-got:
		switch {
		case g.err != nil && errors.Is(g.err, io.EOF):
			return fail(fmt.Errorf("its server exited: %v", <-exited))
		case g.err != nil:
			return fail(g.err)
		case g.resp.Error != "":
			return fail(errors.New(g.resp.Error))
		}
	case <-timer.C:
		return fail(fmt.Errorf("its server was not ready after %s", upTimeout))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	return loadState(dir)
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// printUp says what is running and what to type next.
func printUp(w io.Writer, dir string, st *State) {
	if st.DR == drHyperV {
		printMixedUp(w, dir, st)
		return
	}
	fmt.Fprintf(w, "The lab is up in %s (server pid %d, log %s).\n\n", dir, st.PID, filepath.Join(dir, logFile))
	var vms []string
	for _, vm := range labVMs {
		if slices.Contains(st.VMs, vm.name) {
			ip, _, _ := strings.Cut(vm.ip, "/")
			vms = append(vms, vm.name+" "+ip)
		}
	}
	for _, s := range st.Sites {
		what := fmt.Sprintf("VMs %s, powered on, on %q", strings.Join(vms, ", "), prodNet)
		if s.Name != "prod" {
			what = fmt.Sprintf("no VMs yet; networks %q and %q", prodNet, drNet)
		}
		fmt.Fprintf(w, "  %-4s  %s  %s\n", s.Name, s.URL, what)
	}
	cfg := st.Config
	fmt.Fprintf(w, "\nConfiguration: %s\n", filepath.Join(cfg, configFile))
	fmt.Fprintf(w, "  job %q replicates the VMs from prod to dr; at failover it maps\n", st.Job)
	fmt.Fprintf(w, "  %q to %q and re-IPs %s to %s.\n\n", prodNet, drNet, fromSubnet, toSubnet)
	vm := st.VMs[0]
	printSteps(w, [][2]string{
		{ferryCommand(cfg, "plan"), "what the first run will do"},
		{ferryCommand(cfg, "run", st.Job), "the first run copies every allocated block"},
		{labCommand(dir, "write", vm), vm + "'s guest changes some of its data"},
		{ferryCommand(cfg, "run", st.Job), "only the change crosses (changed block tracking)"},
		{ferryCommand(cfg, "points", st.Job), "two restore points per VM"},
		{ferryCommand(cfg, "failover", st.Job, vm), vm + "'s replica starts on dr, re-IP'd"},
		{labCommand(dir, "status"), "the simulator reports the replica's new address"},
		{ferryCommand(cfg, "failover", "undo", st.Job, vm), "back to replication"},
		{labCommand(dir, "down"), "stop the lab and remove its files"},
	})
}

// printSteps prints commands to try, with what each does.
func printSteps(w io.Writer, steps [][2]string) {
	width := 0
	for _, s := range steps {
		width = max(width, len(s[0]))
	}
	fmt.Fprintln(w, "Try:")
	for _, s := range steps {
		fmt.Fprintf(w, "  %-*s  # %s\n", width, s[0], s[1])
	}
}
