package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// noJobs is a configuration folder with one empty file: it loads without
// a plugin and has no jobs, so a verb given a job reaches the check that
// names the job it was given.
func noJobs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.hcl"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestFlagsAnywhere: a verb's flags and the global ones are flags before,
// between and after its arguments, in either spelling; `--` ends them.
func TestFlagsAnywhere(t *testing.T) {
	t.Parallel()
	cfg := noJobs(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{name: "run JOB --json", args: []string{"-C", cfg, "run", "lab", "--json"}, code: exitUsage, stderr: `no job "lab" in ` + cfg + " (jobs: )"},
		{name: "run --json JOB", args: []string{"-C", cfg, "run", "--json", "lab"}, code: exitUsage, stderr: `no job "lab"`},
		{name: "points JOB --json", args: []string{"-C", cfg, "points", "web", "--json"}, code: exitUsage, stderr: `no job "web"`},
		{name: "points JOB VM --json", args: []string{"-C", cfg, "points", "web", "web-01", "--json"}, code: exitUsage, stderr: `no job "web"`},
		{name: "--config after the verb", args: []string{"run", "lab", "--config", cfg}, code: exitUsage, stderr: `no job "lab" in ` + cfg + " "},
		{name: "-C after the arguments", args: []string{"points", "web", "-C", cfg}, code: exitUsage, stderr: `no job "web" in ` + cfg + " "},
		{name: "--config=DIR between the arguments", args: []string{"plan", "--config=" + cfg, "web"}, code: exitUsage, stderr: `no job "web" in ` + cfg + " "},
		{name: "--log-level after the verb", args: []string{"run", "lab", "--log-level", "debug", "-C", cfg}, code: exitUsage, stderr: `no job "lab"`},
		{name: "one dash", args: []string{"run", "lab", "-json", "-config", cfg}, code: exitUsage, stderr: `no job "lab" in ` + cfg + " "},
		{name: "-- ends the flags", args: []string{"-C", cfg, "run", "--", "--json"}, code: exitUsage, stderr: `no job "--json"`},
		{name: "a job named -x after --", args: []string{"-C", cfg, "points", "--json", "--", "-x"}, code: exitUsage, stderr: `no job "-x"`},
		{name: "a dash argument without --", args: []string{"-C", cfg, "points", "web", "-x"}, code: exitUsage, stderr: "unknown shorthand flag: 'x' in -x"},
		{name: "failover flag after the arguments", args: []string{"-C", cfg, "failover", "web", "web-01", "--point", "p1"}, code: exitUsage, stderr: `no job "web"`},
		{name: "failover flag without its value", args: []string{"-C", cfg, "failover", "web", "web-01", "--point"}, code: exitUsage, stderr: "ferry failover: flag needs an argument: --point\nusage: ferry [--config DIR] failover"},
		{name: "unknown flag after the arguments", args: []string{"-C", cfg, "run", "lab", "--fast"}, code: exitUsage, stderr: "ferry run: unknown flag: --fast\nusage: ferry [--config DIR] run"},
		{name: "a flag of another verb", args: []string{"-C", cfg, "status", "--point", "p1"}, code: exitUsage, stderr: "ferry status: unknown flag: --point"},
		{name: "ca subcommand flags anywhere", args: []string{"ca", "list", "--json", "-C", cfg}, code: exitFailure, stderr: "run 'ferry ca init'"},
		{name: "too many arguments", args: []string{"-C", cfg, "points", "web", "web-01", "db-01"}, code: exitUsage, stderr: "ferry points: name a job, and optionally a VM\nusage: ferry [--config DIR] points"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, errb := ferryRun(tt.args...)
			if code != tt.code || out != "" || !strings.Contains(errb, tt.stderr) {
				t.Fatalf("ferry %q: exit %d, want %d with %q on stderr\nstdout:\n%s\nstderr:\n%s", tt.args, code, tt.code, tt.stderr, out, errb)
			}
		})
	}
}

// TestSpellFlags: the spellings of Go's flag package that ferry accepted
// before cobra become cobra's, and nothing else changes.
func TestSpellFlags(t *testing.T) {
	t.Parallel()
	root := newCLI(&bytes.Buffer{}, &bytes.Buffer{}).root
	tests := []struct {
		name      string
		args, out []string
	}{
		{"a verb's flag", []string{"run", "lab", "-json"}, []string{"run", "lab", "--json"}},
		{"a global flag before the verb", []string{"-config", "d", "run"}, []string{"--config", "d", "run"}},
		{"a global flag with its value", []string{"-config=d", "status"}, []string{"--config=d", "status"}},
		{"a global flag after the verb", []string{"points", "web", "-log-level", "info"}, []string{"points", "web", "--log-level", "info"}},
		{"a letter with two dashes", []string{"--C", "d", "run"}, []string{"-C", "d", "run"}},
		{"help", []string{"run", "-help"}, []string{"run", "--help"}},
		{"a subcommand's flag", []string{"ca", "list", "-json"}, []string{"ca", "list", "--json"}},
		{"a subcommand's flag before its argument", []string{"ca", "issue", "-days", "3", "p1"}, []string{"ca", "issue", "--days", "3", "p1"}},
		{"a flag's value stays", []string{"proxy", "-site", "-tls"}, []string{"proxy", "--site", "-tls"}},
		{"a short flag's value stays", []string{"-C", "-json", "run"}, []string{"-C", "-json", "run"}},
		{"not a flag of the verb", []string{"status", "-point", "x"}, []string{"status", "-point", "x"}},
		{"not a flag of ferry", []string{"-json", "run"}, []string{"-json", "run"}},
		{"after --", []string{"points", "web", "--", "-json"}, []string{"points", "web", "--", "-json"}},
		{"an argument that names a verb", []string{"run", "status", "-json"}, []string{"run", "status", "--json"}},
		{"the lab parses its own", []string{"-config", "d", "lab", "write", "-json"}, []string{"--config", "d", "lab", "write", "-json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := spellFlags(root, tt.args); !slices.Equal(got, tt.out) {
				t.Fatalf("spellFlags(%q) = %q, want %q", tt.args, got, tt.out)
			}
		})
	}
}

// withJobs is a configuration folder with two jobs, whose plugins are not
// installed: completion reads it without them.
func withJobs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	hcl := `
source "local" "prod" { path = "../prod" }
target "local" "dr"   { path = "../dr" }

job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["web-01", "web-02"]
}

job "db" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["db-01"]
}
`
	if err := os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestCompleteRequests: what the shells' scripts ask ferry (the hidden
// __complete command): the verbs, their subcommands, flags and values,
// and the jobs and VMs of the configuration named on the line.
func TestCompleteRequests(t *testing.T) {
	t.Parallel()
	cfg := withJobs(t)
	tests := []struct {
		name string
		args []string
		want []string // the candidates, in order, without descriptions
	}{
		{"a verb", []string{"ru"}, []string{"run"}},
		{"verbs", []string{"p"}, []string{"plan", "plugins", "points", "proxy"}},
		{"subcommands", []string{"ca", ""}, []string{"init", "issue", "list"}},
		{"a verb's flag", []string{"run", "--j"}, []string{"--json"}},
		{"jobs", []string{"-C", cfg, "run", ""}, []string{"db", "web"}},
		{"more jobs", []string{"run", "web", "--config", cfg, ""}, []string{"db", "web"}},
		{"a job's VMs", []string{"points", "-C", cfg, "web", ""}, []string{"web-01", "web-02"}},
		{"nothing after the VM", []string{"points", "-C", cfg, "web", "web-01", ""}, nil},
		{"failover", []string{"-C", cfg, "failover", ""}, []string{"undo", "commit", "db", "web"}},
		{"failover undo", []string{"-C", cfg, "failover", "undo", "db", ""}, []string{"db-01"}},
		{"a job by its start", []string{"-C", cfg, "plan", "w"}, []string{"web"}},
		{"shells", []string{"completion", ""}, []string{"bash", "zsh", "fish", "powershell"}},
		{"help topics", []string{"help", "ca", "i"}, []string{"init", "issue"}},
		{"log levels", []string{"--log-level", "d"}, []string{"debug"}},
		{"no configuration", []string{"-C", filepath.Join(cfg, "none"), "run", ""}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, errb := ferryRun(append([]string{"__complete"}, tt.args...)...)
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if code != exitOK || len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], ":") {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errb)
			}
			var got []string
			for _, l := range lines[:len(lines)-1] {
				name, _, _ := strings.Cut(l, "\t")
				got = append(got, name)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("ferry __complete %q: %q, want %q", tt.args, got, tt.want)
			}
		})
	}
}

// TestCompletionScripts: each shell gets a script of its own; bash's
// parses, and completes a verb and a job when bash runs it as it would
// on a tab (the shells that are installed check theirs too).
func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	scripts := map[string]string{}
	for shell, mark := range map[string]string{
		"bash":       "complete -o default -F __start_ferry ferry",
		"zsh":        "#compdef ferry",
		"fish":       "complete -c ferry",
		"powershell": "Register-ArgumentCompleter -CommandName 'ferry'",
	} {
		code, out, errb := ferryRun("completion", shell)
		if code != exitOK || !strings.Contains(out, mark) || !strings.Contains(out, "__complete") {
			t.Errorf("ferry completion %s: exit %d, %d bytes without %q\n%s", shell, code, len(out), mark, errb)
		}
		scripts[shell] = out
	}
	dir := t.TempDir()
	for shell, check := range map[string][]string{"bash": {"bash", "-n"}, "zsh": {"zsh", "-n"}, "fish": {"fish", "--no-execute"}} {
		path := filepath.Join(dir, "ferry."+shell)
		if err := os.WriteFile(path, []byte(scripts[shell]), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := exec.LookPath(check[0]); err != nil {
			if shell == "bash" {
				t.Errorf("no bash to check the script with: %v", err)
			} else {
				t.Logf("%s is not installed: its script is not parsed", shell)
			}
			continue
		}
		if out, err := exec.Command(check[0], append(check[1:], path)...).CombinedOutput(); err != nil {
			t.Errorf("%s does not parse ferry's script: %v\n%s", shell, err, out)
		}
	}

	// A tab after `ferry ru` and after `ferry -C CFG run `, as bash
	// makes it: COMP_WORDS and COMP_CWORD, then the function that
	// `complete -F` names. The script wants bash-completion's
	// _init_completion or _get_comp_words_by_ref; where that package is
	// not installed, a stand-in sets what it would for these plain words.
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	// ferry itself: this test binary as main (TestMain).
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wrapper := "#!/bin/sh\nFERRY_TEST_MAIN=1 exec " + shellQuote(self) + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "ferry"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	// compopt works only inside a completion that bash started.
	const standIn = `
compopt() { :; }
if ! declare -F _init_completion >/dev/null; then
  _get_comp_words_by_ref() {
    cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} words=("${COMP_WORDS[@]}") cword=$COMP_CWORD
  }
fi
`
	cfg := withJobs(t)
	for _, tc := range []struct {
		words string
		want  string
	}{
		{"ferry ru", "run"},
		{"ferry -C " + shellQuote(cfg) + " run ''", "db web"},
		{"ferry points -C " + shellQuote(cfg) + " web web-0", "web-01 web-02"},
	} {
		script := "[ -r /usr/share/bash-completion/bash_completion ] && . /usr/share/bash-completion/bash_completion\n" +
			standIn + ". " + shellQuote(filepath.Join(dir, "ferry.bash")) + "\n" +
			"COMP_WORDS=(" + tc.words + "); COMP_CWORD=$((${#COMP_WORDS[@]}-1))\n" +
			`COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}` + "\n" +
			"__start_ferry\n" + `echo "${COMPREPLY[*]}"` + "\n"
		cmd := exec.Command("bash", "--norc", "--noprofile", "-c", script)
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != tc.want {
			t.Errorf("bash completes %s: %q, %v; want %q", tc.words, out, err, tc.want)
		}
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
