// Package cliflags holds command-line helpers shared by the plugins'
// own commands (ferry-plugin-local's vm commands, ferry-lab-vsphere).
package cliflags

import (
	"flag"
	"fmt"
)

// ParseInterleaved parses flags that may come before, between or after
// the positional arguments, as in "vm create SITE NAME --disk 64MiB", and
// returns the positional arguments. Everything after "--" is positional.
func ParseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// UsageError is a command line that cannot be run as written; the programs
// print it with their usage and exit 2.
type UsageError struct {
	Msg   string
	Usage string
}

func (e *UsageError) Error() string {
	if e.Usage == "" {
		return e.Msg
	}
	return e.Msg + "\nusage: " + e.Usage
}

// Usagef is a UsageError with a formatted message.
func Usagef(usage, format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...), Usage: usage}
}
