// Command ferry replicates virtual machines to a disaster-recovery site and
// fails them over. Each verb lives in a file of its own (cmd_<verb>.go);
// this file holds what they share: the configuration folder, the plugin
// host, logging, and the mapping of errors to exit codes.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/go-hclog"

	"github.com/ferry-dr/ferry/core/pluginhost"
)

// Exit codes, documented in docs/cli.md.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed, or found problems
	exitUsage   = 2 // the command line is wrong
	// exitInterrupted: stopped by Ctrl-C (SIGINT) or SIGTERM, cleanly; 130
	// is what a shell reports for a process that SIGINT ended.
	exitInterrupted = 130
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// command is one verb.
type command struct {
	name    string
	summary string
	usage   string
	run     func(env *env, args []string) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// env is what every verb gets.
type env struct {
	stdout, stderr io.Writer
	configDir      string
	log            hclog.Logger
}

// usageError is a wrong command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// interruptedError is a command stopped by a signal; msg says what that
// left behind.
type interruptedError struct{ msg string }

func (e *interruptedError) Error() string { return "interrupted; " + e.msg }

// exitError carries an exit code for failures already reported.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	catchSIGPIPE()
	out := newOutput(os.Stdout)
	code := run(os.Args[1:], out, os.Stderr)
	if err := out.Flush(); err != nil {
		fmt.Fprintf(os.Stderr, "ferry: %v\n", err)
		if code == exitOK {
			code = exitFailure
		}
	}
	os.Exit(code)
}

func run(args []string, stdout, stderr io.Writer) int {
	global := flag.NewFlagSet("ferry", flag.ContinueOnError)
	global.SetOutput(stderr)
	configDir := global.String("config", ".", "the configuration `folder` (all its *.hcl files)")
	global.StringVar(configDir, "C", ".", "short for --config")
	logLevel := global.String("log-level", envOr("FERRY_LOG", "warn"), "log `level`: trace, debug, info, warn, error")
	global.Usage = func() {} // help goes to stdout, a mistake's usage to stderr: below
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return exitOK
		}
		printUsage(stderr)
		return exitUsage
	}
	rest := global.Args()
	if len(rest) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	name := rest[0]
	if name == "help" {
		if len(rest) > 1 {
			c, ok := commands[rest[1]]
			if !ok {
				fmt.Fprintf(stderr, "ferry help: unknown command %q\n\n", rest[1])
				printUsage(stderr)
				return exitUsage
			}
			// The same as 'ferry CMD -h', flags included.
			rest = []string{c.name, "-h"}
			name = c.name
		} else {
			printUsage(stdout)
			return exitOK
		}
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "ferry: unknown command %q\n\n", name)
		printUsage(stderr)
		return exitUsage
	}
	dir, err := filepath.Abs(*configDir)
	if err != nil {
		fmt.Fprintf(stderr, "ferry: config folder %q: %v\n", *configDir, err)
		return exitUsage
	}
	e := &env{
		stdout:    stdout,
		stderr:    stderr,
		configDir: dir,
		log: hclog.New(&hclog.LoggerOptions{
			Name:   "ferry",
			Level:  hclog.LevelFromString(*logLevel),
			Output: stderr,
		}),
	}
	err = c.run(e, rest[1:])
	var ue *usageError
	var ee *exitError
	var ie *interruptedError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "ferry %s: %s\nusage: %s\n", name, ue.msg, c.usage)
		return exitUsage
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ie):
		fmt.Fprintf(stderr, "ferry %s: %v\n", name, ie)
		return exitInterrupted
	default:
		fmt.Fprintf(stderr, "ferry %s: %v\n", name, err)
		return exitFailure
	}
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "ferry %s: replicate virtual machines and fail them over\n\n", version)
	fmt.Fprintln(w, "usage: ferry [--config DIR] [--log-level LEVEL] <command> [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, firstLine(commands[n].summary))
	}
	fmt.Fprintln(w, "\nglobal flags:")
	fmt.Fprintln(w, "  --config DIR, -C DIR  the configuration folder (all its *.hcl files; default .)")
	fmt.Fprintln(w, "  --log-level LEVEL     trace, debug, info, warn or error (default warn, or $FERRY_LOG)")
	fmt.Fprintln(w, "\nRun 'ferry help <command>' or 'ferry <command> -h' for details.")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// flags returns a flag set for a verb. What the flag package prints is
// held until parse knows whether it was asked for (-h: standard output)
// or is a mistake (standard error).
func (c *command) flags(e *env) *flag.FlagSet {
	fs := flag.NewFlagSet("ferry "+c.name, flag.ContinueOnError)
	fs.SetOutput(&flagOutput{stdout: e.stdout, stderr: e.stderr})
	fs.Usage = func() { c.help(fs.Output(), fs) }
	return fs
}

// flagOutput holds a flag set's output for parse to send on.
type flagOutput struct {
	bytes.Buffer
	stdout, stderr io.Writer
}

// help prints a verb's usage, summary and flags.
func (c *command) help(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", c.usage, c.summary)
	if fs == nil || !hasFlags(fs) {
		return
	}
	fmt.Fprintln(w, "\nflags:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		name := flagName(f.Name)
		if arg != "" {
			name += " " + arg
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(tw, "  %s\t%s\n", name, usage)
	})
	tw.Flush()
}

// flagName spells a flag as ferry's help and usage lines do: --name, or
// -n for a one-letter flag. (The flag package accepts both dashes.)
func flagName(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parse parses a verb's flags; a bad flag is a usage error already
// printed on standard error, -h prints the verb's help on standard output.
func parse(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if out, ok := fs.Output().(*flagOutput); ok {
		to := out.stderr
		if errors.Is(err, flag.ErrHelp) {
			to = out.stdout
		}
		out.WriteTo(to)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: exitUsage}
	}
	return nil
}

// host returns a plugin host over the search path of the configuration.
func (e *env) host() *pluginhost.Host {
	return pluginhost.New(pluginhost.Options{Dirs: pluginhost.SearchPath(e.configDir), Logger: e.log})
}
