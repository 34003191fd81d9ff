package local

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ferry-dr/ferry/plugins/internal/cliflags"
)

// The person-facing CLI of ferry-plugin-local: one file per verb
// (cmd_vm_*.go). RunCLI returns errors; main turns them into messages and
// exit codes (1 for an error, 2 for a usage error).

const cliUsage = `ferry-plugin-local: the file-backed ferry plugin (source, target, repository).

Started by ferry with no arguments, it serves the plugin protocol. Started
by a person, it manages VMs in site folders:

  ferry-plugin-local vm create SITE NAME --disk SIZE [--disk SIZE] [--nic NETWORK=ADDRESS/PREFIX] [--cpus N] [--memory MIB]
  ferry-plugin-local vm list   SITE
  ferry-plugin-local vm show   SITE NAME [--json]
  ferry-plugin-local vm write  SITE NAME DISK_INDEX OFFSET   < data
  ferry-plugin-local vm read   SITE NAME DISK_INDEX [--point ID]   > data
  ferry-plugin-local vm resize SITE NAME DISK_INDEX SIZE
  ferry-plugin-local version

Sizes and offsets take units: 4096, 64KiB, 64MiB, 512M, 1G (binary), 1GB (decimal).
Run "ferry-plugin-local vm COMMAND --help" for one command.
`

// UsageError is a command line that cannot be run as written.
type UsageError = cliflags.UsageError

var usagef = cliflags.Usagef

// command is one verb of the CLI.
type command struct {
	usage string // the synopsis after "ferry-plugin-local"
	help  string // what it does, for --help
	run   func(ctx context.Context, c *cliCall) error
	flags func(fs *flag.FlagSet, c *cliCall)
	nargs int // positional arguments
}

// cliCall is one run of a command: its parsed arguments and streams.
type cliCall struct {
	args   []string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	disks   sizeList
	nics    stringList
	folder  string
	tags    stringList
	cpus    int
	memory  int64
	json    bool
	point   string
	extents string
}

var vmCommands = map[string]*command{
	"create": cmdVMCreate,
	"list":   cmdVMList,
	"show":   cmdVMShow,
	"write":  cmdVMWrite,
	"read":   cmdVMRead,
	"resize": cmdVMResize,
}

// RunCLI runs the command line args (without the program name).
func RunCLI(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &UsageError{Msg: "no command", Usage: "ferry-plugin-local vm COMMAND ... (see ferry-plugin-local help)"}
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		_, err := io.WriteString(stdout, cliUsage)
		return err
	case "version", "--version":
		_, err := fmt.Fprintf(stdout, "ferry-plugin-local %s\n", Version)
		return err
	case "vm":
	default:
		return &UsageError{Msg: fmt.Sprintf("unknown command %q", args[0]), Usage: "ferry-plugin-local vm COMMAND ... (see ferry-plugin-local help)"}
	}
	if len(args) < 2 || args[1] == "help" || args[1] == "-h" || args[1] == "--help" {
		if len(args) >= 2 {
			_, err := io.WriteString(stdout, cliUsage)
			return err
		}
		return &UsageError{Msg: "vm: no command", Usage: "ferry-plugin-local vm create|list|show|write|read|resize ..."}
	}
	cmd, ok := vmCommands[args[1]]
	if !ok {
		return &UsageError{Msg: fmt.Sprintf("vm: unknown command %q", args[1]), Usage: "ferry-plugin-local vm create|list|show|write|read|resize ..."}
	}
	c := &cliCall{stdin: stdin, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("vm "+args[1], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if cmd.flags != nil {
		cmd.flags(fs, c)
	}
	pos, err := cliflags.ParseInterleaved(fs, args[2:])
	if errors.Is(err, flag.ErrHelp) {
		return printHelp(stdout, cmd, fs)
	}
	if err != nil {
		return usagef(cmd.usage, "vm %s: %v", args[1], err)
	}
	if len(pos) != cmd.nargs {
		return usagef(cmd.usage, "vm %s: want %d arguments, got %d", args[1], cmd.nargs, len(pos))
	}
	c.args = pos
	return cmd.run(ctx, c)
}

func printHelp(w io.Writer, cmd *command, fs *flag.FlagSet) error {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s\n\n%s\n", cmd.usage, cmd.help)
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			b.WriteString("\nflags:\n")
			first = false
		}
		fmt.Fprintf(&b, "  --%-8s %s\n", f.Name, f.Usage)
	})
	_, err := io.WriteString(w, b.String())
	return err
}

// sizeList collects repeated size flags.
type sizeList []int64

func (l *sizeList) String() string {
	parts := make([]string, len(*l))
	for i, n := range *l {
		parts[i] = FormatSize(n)
	}
	return strings.Join(parts, ",")
}

func (l *sizeList) Set(s string) error {
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	if n <= 0 {
		return fmt.Errorf("size %q: must be more than zero", s)
	}
	*l = append(*l, n)
	return nil
}

// stringList collects repeated string flags.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// diskIndex parses a DISK_INDEX argument.
func diskIndex(usage, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, usagef(usage, "disk index %q: not a number from 0 up", s)
	}
	return n, nil
}
