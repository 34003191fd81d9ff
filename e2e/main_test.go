package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// orphanParentEnv makes the test binary a parent for
// TestChildrenDieWithTheTests (Linux): it starts a long child as the
// tests do, prints the child's pid and waits to be killed.
const orphanParentEnv = "FERRY_E2E_ORPHAN_PARENT"

// bin is the folder holding the freshly built ferry and plugins.
var bin string

func TestMain(m *testing.M) {
	if os.Getenv(orphanParentEnv) != "" {
		orphanParent()
	}
	dir, err := os.MkdirTemp("", "ferry-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	for _, b := range []struct{ out, pkg string }{
		{"ferry", "../cmd/ferry"},
		{"ferry-plugin-local", "../plugins/local/cmd/ferry-plugin-local"},
		{"ferry-plugin-hyperv", "../plugins/hyperv/cmd/ferry-plugin-hyperv"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.out, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is what a command did.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs a built binary with args and optional stdin.
func run(t *testing.T, stdin []byte, name string, args ...string) result {
	t.Helper()
	return runEnv(t, stdin, []string{"HOME=" + t.TempDir(), "FERRY_PLUGIN_PATH="}, name, args...)
}

// runEnv runs a built binary with variables added to the environment.
func runEnv(t *testing.T, stdin []byte, env []string, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, name), args...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s %s: %v", name, strings.Join(args, " "), err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// must runs a command that must succeed.
func must(t *testing.T, stdin []byte, name string, args ...string) result {
	t.Helper()
	r := run(t, stdin, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: %s", name, strings.Join(args, " "), r)
	}
	return r
}

// ferry runs ferry on a configuration folder.
func ferry(t *testing.T, cfg string, args ...string) result {
	t.Helper()
	return run(t, nil, "ferry", append([]string{"-C", cfg}, args...)...)
}

// local runs the local plugin's tool.
func local(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	return must(t, stdin, "ferry-plugin-local", args...)
}
