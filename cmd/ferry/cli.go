package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The command line is parsed by cobra, as kubectl's, gh's and helm's are:
// flags may come before, between and after the arguments, the global
// flags work after the verb too, `--` ends the flags (a VM named "-x" is
// `ferry points JOB -- -x`), and cobra gives the shells their completion.
// ferry keeps its own help texts, its usage lines and its exit codes; this
// file builds the tree of cobra commands from the verbs' table.

// cli is one invocation of ferry: its tree of commands and the values of
// the global flags. Each invocation builds its own, so tests may run
// several at once.
type cli struct {
	root           *cobra.Command
	stdout, stderr io.Writer
	configDir      string
	logLevel       string
	server         string // --server: act through this ferry server
	// getenv reads the environment (os.Getenv; tests set their own).
	getenv func(string) string
	// of finds the verb (or subcommand) behind a cobra command.
	of map[*cobra.Command]*command
	// ran is set once a command's own code runs: an error before that is
	// the command line's (a flag cobra could not parse).
	ran bool
}

func newCLI(stdout, stderr io.Writer) *cli {
	c := &cli{stdout: stdout, stderr: stderr, getenv: os.Getenv, of: map[*cobra.Command]*command{}}
	root := &cobra.Command{
		Use:  "ferry",
		Args: cobra.ArbitraryArgs,
		// The flags before a verb are parsed as ferry's (so that `ferry -C
		// DIR lab up` does not hand -C to the lab program), those after it
		// as the verb's, which include the global ones.
		TraverseChildren:  true,
		SilenceErrors:     true, // run prints errors and usage itself
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true}, // ferry completion is a verb
		RunE: func(cmd *cobra.Command, args []string) error {
			c.ran = true
			if len(args) == 0 {
				return &usageError{full: true}
			}
			return &usageError{msg: fmt.Sprintf("unknown command %q", args[0]), full: true}
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	flags := root.PersistentFlags()
	flags.StringVarP(&c.configDir, "config", "C", ".", "the configuration `folder` (all its *.hcl files)")
	flags.StringVar(&c.logLevel, "log-level", envOr("FERRY_LOG", "warn"), "log `level`: trace, debug, info, warn, error")
	flags.StringVar(&c.server, "server", "", "act through the ferry server at `ADDR` (https://HOST:PORT; default $FERRY_ADDR)")
	root.MarkPersistentFlagDirname("config")
	root.RegisterFlagCompletionFunc("log-level", func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return startingWith([]string{"trace", "debug", "info", "warn", "error"}, toComplete), cobra.ShellCompDirectiveNoFileComp
	})
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })
	root.SetHelpFunc(func(cmd *cobra.Command, _ []string) {
		if v, ok := c.of[cmd]; ok {
			v.help(cmd.OutOrStdout(), cmd.LocalFlags())
			return
		}
		printUsage(cmd.OutOrStdout())
	})
	c.root = root
	for _, n := range commandNames(commands) {
		cc := c.cobra(commands[n])
		if n == "help" {
			root.SetHelpCommand(cc) // instead of cobra's, which exits 0 on an unknown topic
			continue
		}
		root.AddCommand(cc)
	}
	return c
}

// cobra makes the cobra command of a verb or subcommand.
func (c *cli) cobra(v *command) *cobra.Command {
	cc := &cobra.Command{
		Use:                v.name,
		Short:              firstLine(v.summary),
		Args:               cobra.ArbitraryArgs, // each verb checks its own, with its own words
		DisableFlagParsing: v.raw,
	}
	c.of[cc] = v
	run := v.setup(cc.Flags())
	cc.RunE = func(cmd *cobra.Command, args []string) error {
		c.ran = true
		e, err := c.env()
		if err != nil {
			return err
		}
		return run(e, args)
	}
	cc.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if v.complete == nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return startingWith(v.complete(c.completionDir(), args), toComplete), cobra.ShellCompDirectiveNoFileComp
	}
	for _, sub := range v.subs {
		cc.AddCommand(c.cobra(sub))
	}
	return cc
}

// startingWith returns the candidates that start with what is typed.
func startingWith(candidates []string, typed string) []cobra.Completion {
	var out []cobra.Completion
	for _, s := range candidates {
		if strings.HasPrefix(s, typed) {
			out = append(out, s)
		}
	}
	return out
}

// env is what a verb gets, once the flags are parsed.
func (c *cli) env() (*env, error) {
	dir, err := filepath.Abs(c.configDir)
	if err != nil {
		return nil, fmt.Errorf("config folder %q: %w", c.configDir, err)
	}
	server := c.server
	if server == "" {
		server = c.getenv("FERRY_ADDR")
	}
	return &env{
		stdout:    c.stdout,
		stderr:    c.stderr,
		configDir: dir,
		log: hclog.New(&hclog.LoggerOptions{
			Name:   "ferry",
			Level:  hclog.LevelFromString(c.logLevel),
			Output: c.stderr,
		}),
		cli:    c,
		server: server,
		getenv: c.getenv,
	}, nil
}

// completionDir is the configuration folder a completion reads.
func (c *cli) completionDir() string {
	if dir, err := filepath.Abs(c.configDir); err == nil {
		return dir
	}
	return c.configDir
}

// execute runs the command line and returns ferry's exit code, having
// printed what went wrong.
func (c *cli) execute(args []string) int {
	if len(args) == 0 || (args[0] != cobra.ShellCompRequestCmd && args[0] != cobra.ShellCompNoDescRequestCmd) {
		args = spellFlags(c.root, args)
	}
	c.root.SetArgs(args)
	cmd, err := c.root.ExecuteC()
	if err != nil && !c.ran {
		var ue *usageError
		if !errors.As(err, &ue) {
			// cobra's, from the flags before a verb.
			err = &usageError{msg: err.Error(), full: true}
		}
	}
	var ue *usageError
	var ee *exitError
	var ie *interruptedError
	name := "ferry"
	if cmd != nil {
		name = cmd.CommandPath()
	}
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue) && (ue.full || cmd == nil || c.of[cmd] == nil):
		if ue.msg != "" {
			fmt.Fprintf(c.stderr, "%s: %s\n\n", name, ue.msg)
		}
		printUsage(c.stderr)
		return exitUsage
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "%s: %s\nusage: %s\n", name, ue.msg, c.of[cmd].usage)
		return exitUsage
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ie):
		fmt.Fprintf(c.stderr, "%s: %v\n", name, ie)
		return exitInterrupted
	default:
		fmt.Fprintf(c.stderr, "%s: %v\n", name, err)
		return exitFailure
	}
}

// help prints a verb's usage, summary and flags (fs may be nil: none).
func (v *command) help(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", v.usage, v.summary)
	if fs == nil {
		return
	}
	var rows []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" || f.Hidden {
			return // every verb has -h and --help
		}
		arg, usage := pflag.UnquoteUsage(f)
		name := flagName(f.Name)
		if arg != "" {
			name += " " + arg
		}
		if d := f.DefValue; d != "" && d != "false" && d != "0" && d != "[]" {
			usage += fmt.Sprintf(" (default %s)", d)
		}
		rows = append(rows, fmt.Sprintf("  %s\t%s\n", name, usage))
	})
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nflags:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		io.WriteString(tw, r)
	}
	tw.Flush()
}

// flagName spells a flag as ferry's help and usage lines do: --name, or
// -n for a one-letter flag.
func flagName(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// spellFlags respells the flags of a command line the way cobra parses
// them, for the spellings ferry accepted before it used cobra (Go's flag
// package): a long flag with one dash (-json, -config=DIR) gets two, and
// a one-letter flag with two dashes (--C DIR) gets one. It changes only
// names that are flags of the command the line runs, leaves flag values
// alone, and stops at `--` and at a verb that parses its own arguments
// (lab).
func spellFlags(root *cobra.Command, args []string) []string {
	out := slices.Clone(args)
	cmd := root
	positional := false // after a verb's first argument no subcommand follows
	for i := 0; i < len(out); i++ {
		a := out[i]
		if a == "--" || cmd.DisableFlagParsing {
			break
		}
		if len(a) < 2 || a[0] != '-' {
			if !positional {
				if sub := subcommand(cmd, a); sub != nil {
					cmd = sub
					continue
				}
			}
			positional = true
			continue
		}
		dashes := 1
		if a[1] == '-' {
			dashes = 2
		}
		name, _, hasValue := strings.Cut(a[dashes:], "=")
		var f *pflag.Flag
		switch {
		case dashes == 1 && len(name) > 1:
			if f = lookupFlag(cmd, name); f != nil {
				out[i] = "-" + a
			}
		case dashes == 2 && len(name) == 1:
			if f = lookupShorthand(cmd, name); f != nil && lookupFlag(cmd, name) == nil {
				out[i] = a[1:]
			}
		case dashes == 2:
			f = lookupFlag(cmd, name)
		default:
			f = lookupShorthand(cmd, name)
		}
		if f != nil && !hasValue && f.NoOptDefVal == "" {
			i++ // the flag's value: left as it is
		}
	}
	return out
}

// subcommand is cmd's subcommand named name, or nil.
func subcommand(cmd *cobra.Command, name string) *cobra.Command {
	for _, sub := range cmd.Commands() {
		if sub.Name() == name {
			return sub
		}
	}
	return nil
}

// lookupFlag finds a long flag of cmd, its own or a parent's global one.
func lookupFlag(cmd *cobra.Command, name string) *pflag.Flag {
	if name == "help" {
		return &pflag.Flag{Name: "help", NoOptDefVal: "true"} // cobra adds it at execution
	}
	for c := cmd; c != nil; c = c.Parent() {
		if f := c.Flags().Lookup(name); f != nil {
			return f
		}
		if f := c.PersistentFlags().Lookup(name); f != nil {
			return f
		}
	}
	return nil
}

// lookupShorthand finds a one-letter flag of cmd or a parent.
func lookupShorthand(cmd *cobra.Command, name string) *pflag.Flag {
	for c := cmd; c != nil; c = c.Parent() {
		if f := c.Flags().ShorthandLookup(name); f != nil {
			return f
		}
		if f := c.PersistentFlags().ShorthandLookup(name); f != nil {
			return f
		}
	}
	return nil
}
