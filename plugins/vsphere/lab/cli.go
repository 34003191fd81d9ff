package lab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ferry-dr/ferry/plugins/internal/cliflags"
)

// The command line of ferry-lab-vsphere, which `ferry lab` runs with its
// own arguments: one file per verb (cmd_<verb>.go). RunCLI returns errors;
// main turns them into messages and exit codes (1 for an error, 2 for a
// usage error).

const cliUsage = `ferry lab: a local two-site lab: vSphere on govmomi's simulator, and
Hyper-V on a simulated host for the mixed lab.

  ferry lab up     [--dir DIR] [--dr hyperv]          start it: two simulated vCenters, prod
                                                      and dr, VMs with data on prod, and a
                                                      configuration for them in DIR/config;
                                                      with --dr hyperv (the mixed lab), dr
                                                      is a simulated Hyper-V host
  ferry lab write  [--dir DIR] VM [--disk N] [--count N]
                                                      change some of a prod VM's data, as its
                                                      guest would (change tracking sees it)
  ferry lab status [--dir DIR] [--json]               the sites and their VMs, as the
                                                      simulators report them
  ferry lab verify [--dir DIR] VM [--json]            compare a prod VM's disks with its
                                                      replica's on dr, byte for byte
  ferry lab down   [--dir DIR]                        stop it and remove what up made

DIR is the lab's folder, ~/.ferry/lab by default. The lab runs until
'ferry lab down'; its log is DIR/lab.log.
`

// UsageError is a command line that cannot be run as written.
type UsageError = cliflags.UsageError

var usagef = cliflags.Usagef

// command is one verb.
type command struct {
	usage string // the synopsis
	help  string // what it does, for --help
	nargs int    // positional arguments
	flags func(fs *flag.FlagSet, c *call)
	run   func(ctx context.Context, c *call) error
}

// call is one run of a verb: its parsed arguments and streams.
type call struct {
	args           []string
	stdout, stderr io.Writer
	dir            string // the lab folder, absolute

	// flags of the verbs
	json    bool
	disk    int
	count   int
	socket  string
	readyFD int
	drKind  string // up's and serve's --dr
}

var commands = map[string]*command{
	"up":     cmdUp,
	"down":   cmdDown,
	"write":  cmdWrite,
	"status": cmdStatus,
	"serve":  cmdServe,
	"verify": cmdVerify,
}

// drFlag is the --dr flag of up and serve.
func drFlag(fs *flag.FlagSet, c *call) {
	fs.Func("dr", "the dr `site`: vsphere (a second simulated vCenter, the default) or hyperv (a simulated Hyper-V host)", func(v string) error {
		if v != drVSphere && v != drHyperV {
			return fmt.Errorf("%q is not a kind of dr site: vsphere or hyperv", v)
		}
		c.drKind = v
		return nil
	})
}

// RunCLI runs the command line args (without the program name).
func RunCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &UsageError{Msg: "no command", Usage: "ferry lab up|write|status|verify|down [--dir DIR] ... (see ferry lab help)"}
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		_, err := io.WriteString(stdout, cliUsage)
		return err
	}
	cmd, ok := commands[args[0]]
	if !ok {
		return &UsageError{Msg: fmt.Sprintf("unknown command %q", args[0]), Usage: "ferry lab up|write|status|verify|down [--dir DIR] ... (see ferry lab help)"}
	}
	c := &call{stdout: stdout, stderr: stderr, drKind: drVSphere}
	fs := flag.NewFlagSet("lab "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", "", "the lab's `folder` (default ~/.ferry/lab)")
	if cmd.flags != nil {
		cmd.flags(fs, c)
	}
	pos, err := cliflags.ParseInterleaved(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return printHelp(stdout, cmd, fs)
	}
	if err != nil {
		return usagef(cmd.usage, "%s: %v", args[0], err)
	}
	if len(pos) != cmd.nargs {
		if cmd.nargs == 0 {
			return usagef(cmd.usage, "%s: unexpected argument %q", args[0], pos[0])
		}
		return usagef(cmd.usage, "%s: want %d argument(s), got %d", args[0], cmd.nargs, len(pos))
	}
	c.args = pos
	if c.dir, err = labDir(*dir); err != nil {
		return err
	}
	return cmd.run(ctx, c)
}

// labDir resolves the --dir flag: absolute, ~/.ferry/lab when empty.
func labDir(flagValue string) (string, error) {
	if flagValue == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("the default lab folder is ~/.ferry/lab, but there is no home folder (%v): pass --dir", err)
		}
		flagValue = filepath.Join(home, ".ferry", "lab")
	}
	abs, err := filepath.Abs(flagValue)
	if err != nil {
		return "", fmt.Errorf("lab folder %q: %w", flagValue, err)
	}
	return abs, nil
}

func printHelp(w io.Writer, cmd *command, fs *flag.FlagSet) error {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s\n\n%s\n\nflags:\n", cmd.usage, cmd.help)
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s %s\n        %s\n", n, name, usage)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
