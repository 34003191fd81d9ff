// Command ferry replicates virtual machines to a disaster-recovery site and
// fails them over. Each verb lives in a file of its own (cmd_<verb>.go);
// this file holds what they share: the verbs' table, the plugin host and
// the errors that become exit codes; cli.go turns the table into the
// command line.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/core/pluginhost"
	"github.com/ferry-dr/ferry/sdk"
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

// command is one verb, or a subcommand of one (ca init).
type command struct {
	name string
	// summary: its first line is a sentence for the list of commands and
	// for completion; the rest says more in the command's help.
	summary string
	usage   string
	// setup declares the command's flags on fs and returns the command
	// bound to their values. It runs with the arguments that are not
	// flags, wherever the flags were on the command line.
	setup func(fs *pflag.FlagSet) runFunc
	// complete lists the candidates for the argument after args (job
	// names, a job's VMs) in the configuration folder dir; nil completes
	// nothing. Candidates that do not start with what is typed are dropped.
	complete func(dir string, args []string) []string
	// raw: the command gets its arguments as they are, flags included,
	// for a program of its own to parse (lab).
	raw bool
	// subs are the subcommands, each with its own flags (ca init, issue,
	// list).
	subs []*command
}

// runFunc runs a command with its arguments.
type runFunc func(e *env, args []string) error

// noFlags is the setup of a command without flags.
func noFlags(run runFunc) func(*pflag.FlagSet) runFunc {
	return func(*pflag.FlagSet) runFunc { return run }
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// env is what every verb gets.
type env struct {
	stdout, stderr io.Writer
	configDir      string
	log            hclog.Logger
	cli            *cli // the command tree, for help and completion scripts
	// server is the address of the ferry server the verbs that can act
	// through one act through (--server, or FERRY_ADDR); "" acts here.
	server string
	getenv func(string) string
}

// usageError is a wrong command line. full: show the list of commands
// rather than the command's usage line.
type usageError struct {
	msg  string
	full bool
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// interruptedError is a command stopped by a signal; msg says what that
// left behind.
type interruptedError struct{ msg string }

func (e *interruptedError) Error() string { return "interrupted; " + e.msg }

// exitError carries an exit code for failures already reported.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	catchSIGPIPE()
	// FERRY_CPUPROFILE=DIR: a CPU profile of this run (docs/cli.md).
	stopProfile, err := sdk.StartCPUProfile("ferry")
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferry: %v\n", err)
	}
	out := newOutput(os.Stdout)
	code := run(os.Args[1:], out, os.Stderr)
	if err := stopProfile(); err != nil {
		fmt.Fprintf(os.Stderr, "ferry: %v\n", err)
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintf(os.Stderr, "ferry: %v\n", err)
		if code == exitOK {
			code = exitFailure
		}
	}
	os.Exit(code)
}

// run runs ferry's command line and returns its exit code.
func run(args []string, stdout, stderr io.Writer) int {
	return newCLI(stdout, stderr).execute(args)
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "ferry %s: replicate virtual machines and fail them over\n\n", version)
	fmt.Fprintln(w, "usage: ferry [--config DIR] [--log-level LEVEL] [--server ADDR] <command> [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, n := range commandNames(commands) {
		fmt.Fprintf(w, "  %-10s %s\n", n, firstLine(commands[n].summary))
	}
	fmt.Fprintln(w, "\nglobal flags, before or after the command:")
	fmt.Fprintln(w, "  --config DIR, -C DIR  the configuration folder (all its *.hcl files; default .)")
	fmt.Fprintln(w, "  --log-level LEVEL     trace, debug, info, warn or error (default warn, or $FERRY_LOG)")
	fmt.Fprintln(w, "  --server ADDR         act through the ferry server at ADDR (or $FERRY_ADDR): status, points,")
	fmt.Fprintln(w, "                        sessions, session, run, failover and plan; credentials from $FERRY_TOKEN")
	fmt.Fprintln(w, "                        or the configuration folder's ca/control (docs/cli.md)")
	fmt.Fprintln(w, "\nFlags may come before, between and after the arguments; '--' ends them.")
	fmt.Fprintln(w, "Run 'ferry help <command>' or 'ferry <command> -h' for details.")
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

// host returns a plugin host over the search path of the configuration.
func (e *env) host() *pluginhost.Host {
	return pluginhost.New(pluginhost.Options{Dirs: pluginhost.SearchPath(e.configDir), Logger: e.log})
}
