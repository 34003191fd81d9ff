package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// How the lab's messages name things for a person to type.

// ferryProgram is how to run ferry: "ferry" when the ferry that ran `ferry
// lab` (FERRY_EXECUTABLE, set by it) is the one on PATH, else its path.
func ferryProgram() string {
	exe := os.Getenv("FERRY_EXECUTABLE")
	if exe == "" {
		return "ferry"
	}
	if p, err := exec.LookPath("ferry"); err == nil && sameFile(p, exe) {
		return "ferry"
	}
	return shellQuote(exe)
}

func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// labCommand is the command line of a lab verb for the lab in dir; --dir
// only when dir is not the default.
func labCommand(dir, verb string, args ...string) string {
	parts := []string{ferryProgram(), "lab", verb}
	if def, err := labDir(""); err != nil || filepath.Clean(def) != dir {
		parts = append(parts, "--dir", shellQuote(dir))
	}
	return strings.Join(append(parts, args...), " ")
}

// ferryCommand is a ferry command line on the lab's configuration.
func ferryCommand(cfg string, args ...string) string {
	return strings.Join(append([]string{ferryProgram(), "-C", shellQuote(cfg)}, args...), " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_./@%+=:,-", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// size formats a byte count with binary units.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// tail returns the last lines of a file, for an error message.
func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
