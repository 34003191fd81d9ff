package local

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk"
)

// buildBinary builds ferry-plugin-local into a temporary folder.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the plugin binary")
	}
	bin := filepath.Join(t.TempDir(), "ferry-plugin-local")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ferry-plugin-local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, bin string, stdin []byte, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// TestBinary builds the plugin and drives its CLI end to end, also against
// a snapshot and a restore point held by this process, and checks the
// plugin handshake is the first thing on stdout.
func TestBinary(t *testing.T) {
	ctx := context.Background()
	bin := buildBinary(t)
	site := t.TempDir()
	steps := []struct {
		args  []string
		stdin []byte
		code  int
		out   string // a substring of stdout
		err   string // a substring of stderr
	}{
		{[]string{"help"}, nil, 0, "vm create SITE NAME", ""},
		{[]string{"vm", "create", "--help"}, nil, 0, "--disk", ""},
		{[]string{"version"}, nil, 0, Version, ""},
		{[]string{"vm", "create", site, "web"}, nil, 2, "", "at least one --disk"},
		{[]string{"vm", "bogus"}, nil, 2, "", "unknown command"},
		{[]string{"vm", "create", site, "web", "--disk", "1MiB", "--disk", "512K", "--nic", "prod=10.1.0.5/24", "--cpus", "2"}, nil, 0, "created vm web", ""},
		{[]string{"vm", "write", site, "web", "0", "4096"}, []byte("hello, ferry"), 0, "", "wrote 12 bytes"},
		{[]string{"vm", "write", site, "nobody", "0", "0"}, []byte("x"), 1, "", `"nobody"`},
		{[]string{"vm", "write", site, "web", "3", "0"}, []byte("x"), 1, "", "disk 3"},
		{[]string{"vm", "resize", site, "web", "1", "1MiB"}, nil, 0, "1MiB", ""},
		{[]string{"vm", "resize", site, "web", "1", "4K"}, nil, 1, "", "only grow"},
		{[]string{"vm", "show", site, "web"}, nil, 0, "10.1.0.5/24", ""},
		{[]string{"vm", "show", site, "web", "--json"}, nil, 0, `"memory_mib": 1024`, ""},
		{[]string{"vm", "list", site}, nil, 0, "web", ""},
		{[]string{"vm", "show", site, "nobody"}, nil, 1, "", "vm.json"},
	}
	for _, s := range steps {
		r := run(t, bin, s.stdin, s.args...)
		if r.code != s.code || !strings.Contains(r.stdout, s.out) || !strings.Contains(r.stderr, s.err) {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want exit %d, %q, %q", s.args, r.code, r.stdout, r.stderr, s.code, s.out, s.err)
		}
	}
	r := run(t, bin, nil, "vm", "read", site, "web", "0")
	if r.code != 0 || len(r.stdout) != 1<<20 || r.stdout[4096:4108] != "hello, ferry" {
		t.Fatalf("vm read: exit %d, %d bytes, stderr %q", r.code, len(r.stdout), r.stderr)
	}

	// Another process writes while this one holds a snapshot: the
	// snapshot stays frozen, the disk's current view has the write.
	src, _ := NewSource(site)
	snap, err := src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: "web", Name: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	if r := run(t, bin, []byte("changed!"), "vm", "write", site, "web", "0", "4096"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	sr, err := src.OpenSnapshotDisk(ctx, "web", snap.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAllAt(t, sr); string(got[4096:4108]) != "hello, ferry" {
		t.Errorf("the snapshot moved: %q", got[4096:4108])
	}
	if err := sr.Close(); err != nil {
		t.Fatal(err)
	}
	if r := run(t, bin, nil, "vm", "read", site, "web", "0"); r.stdout[4096:4104] != "changed!" {
		t.Errorf("the current view misses the write: %q", r.stdout[4096:4108])
	}
	if r := run(t, bin, nil, "vm", "show", site, "web"); !strings.Contains(r.stdout, "e2e") {
		t.Errorf("show does not list the snapshot:\n%s", r.stdout)
	}

	// A restore point read by the CLI.
	target := t.TempDir()
	tgt, _ := NewTarget(target)
	vm, _ := src.DescribeVM(ctx, "web")
	if _, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web-dr", VM: *vm}); err != nil {
		t.Fatal(err)
	}
	w, _ := tgt.OpenReplicaDisk(ctx, "web-dr", 0, 0)
	w.WriteAt([]byte("point one"), 100)
	w.Close()
	p1, _ := tgt.CreateRestorePoint(ctx, "web-dr", nil)
	w, _ = tgt.OpenReplicaDisk(ctx, "web-dr", 0, 0)
	w.WriteAt([]byte("point two"), 100)
	w.Close()
	if r := run(t, bin, nil, "vm", "read", target, "web-dr", "0", "--point", p1.ID); r.code != 0 || r.stdout[100:109] != "point one" {
		t.Fatalf("vm read --point: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := run(t, bin, nil, "vm", "read", target, "web-dr", "0", "--point", "p77"); r.code != 1 || !strings.Contains(r.stderr, `"p77"`) {
		t.Fatalf("vm read of a missing point: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := run(t, bin, nil, "vm", "show", target, "web-dr"); !strings.Contains(r.stdout, "point "+p1.ID) {
		t.Errorf("show does not list the restore point:\n%s", r.stdout)
	}

	// Started by the host, the first line on stdout is go-plugin's
	// handshake; nothing comes before it.
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), sdk.Handshake.MagicCookieKey+"="+sdk.Handshake.MagicCookieValue, "PLUGIN_PROTOCOL_VERSIONS=1")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- l
	}()
	// go-plugin listens on a unix socket, on Windows on loopback TCP.
	network := "unix"
	if runtime.GOOS == "windows" {
		network = "tcp"
	}
	select {
	case l := <-line:
		if !regexp.MustCompile(`^\d+\|1\|` + network + `\|[^|]+\|grpc`).MatchString(l) {
			t.Errorf("first line on stdout %q is not the handshake", l)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no handshake within 20 s")
	}
}
