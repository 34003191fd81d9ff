// Command ferry replicates virtual machines to a disaster-recovery site and
// fails them over. Each verb lives in a file of its own (cmd_<verb>.go);
// this file holds what they share: the configuration folder, the plugin
// host, logging, and the mapping of errors to exit codes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

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
	global.StringVar(configDir, "C", ".", "short for -config")
	logLevel := global.String("log-level", envOr("FERRY_LOG", "warn"), "log `level`: trace, debug, info, warn, error")
	global.Usage = func() { printUsage(stderr) }
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	rest := global.Args()
	if len(rest) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	name := rest[0]
	if name == "help" || name == "-h" || name == "--help" {
		if len(rest) > 1 {
			if c, ok := commands[rest[1]]; ok {
				fmt.Fprintf(stdout, "usage: %s\n\n%s\n", c.usage, c.summary)
				return exitOK
			}
		}
		printUsage(stdout)
		return exitOK
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
	fmt.Fprintln(w, "usage: ferry [-config DIR] [-log-level LEVEL] <command> [arguments]")
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

// flags returns a flag set for a verb that prints the verb's usage.
func (c *command) flags(e *env) *flag.FlagSet {
	fs := flag.NewFlagSet("ferry "+c.name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: %s\n\n%s\n", c.usage, c.summary)
		if hasFlags(fs) {
			fmt.Fprintln(e.stderr, "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parse parses a verb's flags; a bad flag is a usage error already printed.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
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
