package main

import (
	"fmt"
	"slices"
	"strings"
)

func init() {
	register(&command{
		name: "help",
		summary: `Show the help of ferry, or of a command.

'ferry help COMMAND' prints what 'ferry COMMAND -h' prints, on standard
output; a command that does not exist is a wrong command line (exit 2).`,
		usage: "ferry help [COMMAND [SUBCOMMAND]]",
		setup: noFlags(runHelp),
		complete: func(_ string, args []string) []string {
			if len(args) == 0 {
				return commandNames(commands)
			}
			if c, ok := commands[args[0]]; ok && len(args) == 1 {
				subs := map[string]*command{}
				for _, s := range c.subs {
					subs[s.name] = s
				}
				return commandNames(subs)
			}
			return nil
		},
	})
}

func runHelp(e *env, args []string) error {
	cmd := e.cli.root
	for i, name := range args {
		sub := subcommand(cmd, name)
		if sub == nil || sub.Hidden {
			return &usageError{msg: fmt.Sprintf("unknown command %q", strings.Join(args[:i+1], " ")), full: true}
		}
		cmd = sub
	}
	cmd.HelpFunc()(cmd, nil)
	return nil
}

// commandNames returns the names of cmds, sorted.
func commandNames(cmds map[string]*command) []string {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
