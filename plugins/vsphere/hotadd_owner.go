package vsphere

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// owner names who attached a disk to the proxy VM: a Source instance of a
// process on a machine. A disk whose owner is gone is a leftover of a
// killed run and is detached; one whose owner lives is another run's and
// is left alone.
//
// Only the proxy VM itself can judge: a HotAdd reader runs in the VM the
// disk is attached to, so every owner ran there, and liveness is asked of
// this machine's kernel (/proc). A record written on another machine (a
// plugin that names a proxy it does not run in) is not judged at all.
type owner struct {
	Machine string `json:"machine"` // /etc/machine-id (or the host name)
	Boot    string `json:"boot"`    // the kernel's boot id: a reboot kills every owner
	PID     int    `json:"pid"`
	Start   uint64 `json:"start"` // the process's start, in clock ticks after boot: pids are reused
	Token   string `json:"token"` // the Source instance within the process
}

// verdict is what a record's owner is to the process judging it.
type verdict int

const (
	ownerAlive   verdict = iota // a running Source: its disk is in use
	ownerDead                   // gone: its disk is a leftover
	ownerForeign                // of another machine: not ours to judge
)

// judge decides whether o still runs, seen from self. liveToken says
// whether a Source of this process still runs; procStart returns the start
// of a running process, false when there is none.
func (o owner) judge(self owner, liveToken func(string) bool, procStart func(int) (uint64, bool)) (verdict, string) {
	switch {
	case o.Machine == "" || o.Boot == "" || o.PID <= 0:
		return ownerDead, "the record names no owner"
	case o.Machine != self.Machine:
		return ownerForeign, fmt.Sprintf("attached from machine %s, this is %s", o.Machine, self.Machine)
	case o.Boot != self.Boot:
		return ownerDead, "the proxy VM was restarted since"
	case o.PID == self.PID && o.Start == self.Start:
		if liveToken(o.Token) {
			return ownerAlive, "a source of this process"
		}
		return ownerDead, "a source of this process that was stopped"
	}
	start, ok := procStart(o.PID)
	switch {
	case !ok:
		return ownerDead, fmt.Sprintf("process %d is gone", o.PID)
	case start != o.Start:
		return ownerDead, fmt.Sprintf("process %d is gone (its pid now names another process)", o.PID)
	}
	return ownerAlive, fmt.Sprintf("process %d runs", o.PID)
}

// liveTokens are the Source instances of this process that may hold disks
// on a proxy: registered when created, removed at Stop.
var liveTokens sync.Map

func tokenLive(t string) bool { _, ok := liveTokens.Load(t); return ok }

// selfOwner identifies this process and a new Source instance of it. It
// works on Linux only: elsewhere the proxy's guest cannot be asked about
// processes, and HotAdd (which finds devices through udev) is not offered.
func selfOwner() (owner, error) {
	if runtime.GOOS != "linux" {
		return owner{}, fmt.Errorf("HotAdd needs a Linux proxy (this is %s)", runtime.GOOS)
	}
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return owner{}, fmt.Errorf("read the boot id: %w", err)
	}
	start, ok := procStart(os.Getpid())
	if !ok {
		return owner{}, fmt.Errorf("read /proc/self/stat")
	}
	tok := make([]byte, 12)
	if _, err := rand.Read(tok); err != nil {
		return owner{}, err
	}
	return owner{Machine: machineID(), Boot: strings.TrimSpace(string(boot)), PID: os.Getpid(), Start: start, Token: hex.EncodeToString(tok)}, nil
}

// machineID is systemd's machine id, or the host name without one.
func machineID() string {
	for _, f := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
		if b, err := os.ReadFile(f); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return strings.TrimSpace(string(b))
		}
	}
	h, _ := os.Hostname()
	return "host:" + h
}

// procStart reads when a process started (field 22 of /proc/<pid>/stat,
// clock ticks after boot); false when there is no such process.
func procStart(pid int) (uint64, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	return parseProcStart(string(b))
}

// parseProcStart takes the start time out of a /proc/<pid>/stat line. The
// command name (field 2) is in parentheses and may hold spaces and
// parentheses itself, so fields are counted after the last ')'.
func parseProcStart(stat string) (uint64, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(stat[i+1:])
	// fields[0] is field 3 (the state): field 22 is fields[19].
	if len(fields) < 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(fields[19], 10, 64)
	return v, err == nil
}
