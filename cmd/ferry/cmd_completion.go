package main

import (
	"slices"

	"github.com/ferry-dr/ferry/config"
)

func init() {
	register(&command{
		name: "completion",
		summary: `Print the shell completion script for bash, zsh, fish or powershell.

The script completes commands, flags and their values, and the names of
the jobs and VMs of the configuration folder (--config, or the current
folder), read from its files without starting a plugin. To load it:

  bash         source <(ferry completion bash), or write it to
               ~/.local/share/bash-completion/completions/ferry
               (needs the bash-completion package)
  zsh          ferry completion zsh > "${fpath[1]}/_ferry", with compinit
  fish         ferry completion fish > ~/.config/fish/completions/ferry.fish
  powershell   ferry completion powershell | Out-String | Invoke-Expression`,
		usage: "ferry completion bash|zsh|fish|powershell",
		setup: noFlags(runCompletion),
		complete: func(_ string, args []string) []string {
			if len(args) == 0 {
				return []string{"bash", "zsh", "fish", "powershell"}
			}
			return nil
		},
	})
}

func runCompletion(e *env, args []string) error {
	if len(args) != 1 {
		return usagef("name one shell: bash, zsh, fish or powershell")
	}
	root := e.cli.root
	switch args[0] {
	case "bash":
		return root.GenBashCompletionV2(e.stdout, true)
	case "zsh":
		return root.GenZshCompletion(e.stdout)
	case "fish":
		return root.GenFishCompletion(e.stdout, true)
	case "powershell":
		return root.GenPowerShellCompletionWithDesc(e.stdout)
	}
	return usagef("no completion for the shell %q: bash, zsh, fish or powershell", args[0])
}

// configJobs reads the jobs of the configuration in dir, for completion.
// It starts no plugin (a tab must answer at once): plugin blocks are not
// checked, and a job is named even when its configuration has errors.
func configJobs(dir string) map[string]*config.Job {
	cfg, _ := config.Load(dir, nil)
	return cfg.Jobs
}

// completeJobs completes job names, for the verbs that take jobs.
func completeJobs(dir string, _ []string) []string {
	names := []string{}
	for n := range configJobs(dir) {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// completeJobVM completes a job, then one of its VMs (those it names; a
// selector's are known only to the source).
func completeJobVM(dir string, args []string) []string {
	switch len(args) {
	case 0:
		return completeJobs(dir, nil)
	case 1:
		if j, ok := configJobs(dir)[args[0]]; ok {
			return slices.Clone(j.VMs)
		}
	}
	return nil
}

// completeFailover completes 'ferry failover [undo|commit] JOB VM'.
func completeFailover(dir string, args []string) []string {
	if len(args) == 0 {
		return append([]string{"undo", "commit"}, completeJobs(dir, nil)...)
	}
	if args[0] == "undo" || args[0] == "commit" {
		args = args[1:]
	}
	return completeJobVM(dir, args)
}
