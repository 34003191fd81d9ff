//go:build linux

package pluginhost

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
)

// pluginDir holds the test plugin under every name it misbehaves by.
var pluginDir string

func TestMain(m *testing.M) {
	if os.Getenv("PLUGINHOST_TEST_HOST") != "" {
		runHostProcess()
		return
	}
	dir, err := os.MkdirTemp("", "pluginhost-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginDir = dir
	good := filepath.Join(dir, Prefix+"good")
	out, err := exec.Command("go", "build", "-o", good, "./testdata/testplugin").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build test plugin: %v\n%s", err, out)
		os.Exit(1)
	}
	for _, name := range []string{"noisy", "crashy", "hang", "liar", "forker", "shouter", "oldsdk", "impostor"} {
		if err := os.Link(good, filepath.Join(dir, Prefix+name)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var labelCfg = cty.ObjectVal(map[string]cty.Value{"label": cty.StringVal("ok")})

func newHost(t *testing.T) *Host {
	t.Helper()
	h := New(Options{Dirs: []string{pluginDir}, StopDrain: time.Second})
	t.Cleanup(func() { h.Close() })
	return h
}

// pidsOf lists the running processes started from the binary at path.
func pidsOf(t *testing.T, path string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		if strings.TrimSuffix(exe, " (deleted)") == path && !isZombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] == "Z"
}

// waitGone waits until no process runs the binary at path.
func waitGone(t *testing.T, path string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		pids := pidsOf(t, path)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin %s still running after %s: pids %v", filepath.Base(path), within, pids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDiscover(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	write := func(dir, name string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(a, "ferry-plugin-local", 0o755)
	write(a, "ferry-plugin-notes.txt", 0o755)
	write(a, "ferry-plugin-readonly", 0o644)
	write(a, "other-tool", 0o755)
	write(b, "ferry-plugin-local", 0o755)
	write(b, "ferry-plugin-vsphere", 0o755)

	got := Discover([]string{a, b, filepath.Join(a, "missing")})
	want := []Found{
		{Name: "local", Path: filepath.Join(a, "ferry-plugin-local")},
		{Name: "local", Path: filepath.Join(b, "ferry-plugin-local"), Shadowed: true},
		{Name: "vsphere", Path: filepath.Join(b, "ferry-plugin-vsphere")},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Discover =\n%v\nwant\n%v", got, want)
	}
}

func TestSearchPathOrder(t *testing.T) {
	t.Setenv("HOME", "/home/op")
	t.Setenv("FERRY_PLUGIN_PATH", "/opt/a"+string(os.PathListSeparator)+"/opt/b")
	got := SearchPath("/etc/ferry")
	want := []string{"/etc/ferry/plugins", "/home/op/.ferry/plugins", "/opt/a", "/opt/b"}
	if len(got) != len(want)+1 || fmt.Sprint(got[:len(want)]) != fmt.Sprint(want) {
		t.Fatalf("SearchPath = %v, want %v then the binary's folder", got, want)
	}
}

func TestGoodPlugin(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	info, err := h.Info(ctx, "good")
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "good" || info.Version != "1.2.3" || info.ProtocolMajor != sdk.ProtocolMajor {
		t.Fatalf("info = %+v", info)
	}
	if _, ok := info.Component(sdk.KindRepository, "good"); !ok {
		t.Fatalf("components = %+v", info.Components)
	}

	diags, err := h.Validate(ctx, sdk.KindRepository, "good", cty.ObjectVal(map[string]cty.Value{"label": cty.StringVal("bad")}))
	if err != nil {
		t.Fatal(err)
	}
	if !diags.HasErrors() || diags[0].Path.Equals(cty.GetAttrPath("label")) == false {
		t.Fatalf("diagnostics = %+v, want an error at label", diags)
	}

	repo, err := h.Repository(ctx, "good", labelCfg)
	if err != nil {
		t.Fatal(err)
	}
	gen, err := repo.Put(ctx, "a/b", []byte("hello"), sdk.IfAbsent)
	if err != nil || gen != 1 {
		t.Fatalf("Put = %d, %v", gen, err)
	}
	if _, err := repo.Put(ctx, "a/b", []byte("again"), sdk.IfAbsent); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("second IfAbsent put: %v, want failed precondition", err)
	}
	data, _, err := repo.Get(ctx, "a/b")
	if err != nil || string(data) != "hello" {
		t.Fatalf("Get = %q, %v", data, err)
	}
	if _, _, err := repo.Get(ctx, "missing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get missing: %v, want not found across the process boundary", err)
	}

	path := filepath.Join(pluginDir, Prefix+"good")
	if len(pidsOf(t, path)) != 1 {
		t.Fatalf("want one plugin process, have %v", pidsOf(t, path))
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, path, 5*time.Second)
	if _, err := h.Info(ctx, "good"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Info after Close: %v", err)
	}
}

func TestPluginsAreProfiledWithFerry(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(sdk.CPUProfileEnv, dir)
	h := New(Options{Dirs: []string{pluginDir}, StopDrain: time.Second})
	if _, err := h.Info(context.Background(), "good"); err != nil {
		h.Close()
		t.Fatal(err)
	}
	h.Close()
	found, _ := filepath.Glob(filepath.Join(dir, "ferry-plugin-good-*.pprof"))
	if len(found) != 1 {
		t.Fatalf("profiles %v, want one of the plugin", found)
	}
	if fi, err := os.Stat(found[0]); err != nil || fi.Size() == 0 {
		t.Errorf("the plugin's profile is empty (%v)", err)
	}
}

func TestUnknownPlugin(t *testing.T) {
	h := newHost(t)
	_, err := h.Schema(sdk.KindSource, "vmware")
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "ferry-plugin-vmware") {
		t.Fatalf("err = %v", err)
	}
	_, err = h.Schema(sdk.KindSource, "good")
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `serves no source "good"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestNoisyPlugin(t *testing.T) {
	h := newHost(t)
	_, err := h.Info(context.Background(), "noisy")
	if err == nil {
		t.Fatal("a plugin that prints on stdout started")
	}
	for _, want := range []string{"plugin noisy", "hello from a careless init", "stdout before the handshake"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	waitGone(t, filepath.Join(pluginDir, Prefix+"noisy"), 5*time.Second)
}

func TestLiarPlugin(t *testing.T) {
	h := newHost(t)
	_, err := h.Info(context.Background(), "liar")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "somebody-else") {
		t.Fatalf("err = %v", err)
	}
	waitGone(t, filepath.Join(pluginDir, Prefix+"liar"), 5*time.Second)
}

func TestCrashyPluginIsRestarted(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	repo, err := h.Repository(ctx, "crashy", labelCfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Put(ctx, "k", []byte("v"), sdk.IfAny); err != nil {
		t.Fatal(err)
	}
	_, _, err = repo.Get(ctx, "crash")
	if !errors.Is(err, errdefs.ErrPluginExited) || !strings.Contains(err.Error(), "plugin crashy") {
		t.Fatalf("call into a crashing plugin: %v, want a plugin-exited error naming it", err)
	}
	// The next use starts it again.
	repo, err = h.Repository(ctx, "crashy", labelCfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if _, _, err := repo.Get(ctx, "k"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get on the restarted plugin: %v, want not found (a fresh process)", err)
	}
}

func TestHangingStopIsKilled(t *testing.T) {
	h := New(Options{Dirs: []string{pluginDir}, StopDrain: 500 * time.Millisecond})
	ctx := context.Background()
	if _, err := h.Repository(ctx, "hang", labelCfg); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := h.Close()
	if err == nil || !strings.Contains(err.Error(), "plugin hang") || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Close = %v, want an error naming the plugin that did not stop", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close took %s", d)
	}
	waitGone(t, filepath.Join(pluginDir, Prefix+"hang"), 5*time.Second)
}

// runHostProcess is a ferry stand-in: it starts a plugin, prints its
// readiness and waits to be killed.
func runHostProcess() {
	h := New(Options{Dirs: []string{os.Getenv("PLUGINHOST_TEST_DIR")}})
	if _, err := h.Info(context.Background(), os.Getenv("PLUGINHOST_TEST_PLUGIN")); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	select {}
}

// TestNoOrphanWhenHostIsKilled kills a host process with SIGKILL: its
// plugin must end, and so must a child the plugin started.
func TestNoOrphanWhenHostIsKilled(t *testing.T) {
	for _, name := range []string{"good", "forker"} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "PLUGINHOST_TEST_HOST=1", "PLUGINHOST_TEST_DIR="+pluginDir, "PLUGINHOST_TEST_PLUGIN="+name)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil || strings.TrimSpace(line) != "ready" {
				cmd.Process.Kill()
				t.Fatalf("host process said %q, %v", line, err)
			}
			path := filepath.Join(pluginDir, Prefix+name)
			var mine []int
			for _, pid := range pidsOf(t, path) {
				if ppid(pid) == cmd.Process.Pid {
					mine = append(mine, pid)
				}
			}
			if len(mine) != 1 {
				cmd.Process.Kill()
				t.Fatalf("the host process runs plugins %v", mine)
			}
			watch := append(mine, childrenOf(t, mine[0])...)
			if name == "forker" && len(watch) != 2 {
				cmd.Process.Kill()
				t.Fatalf("plugin %d has children %v, want its sleep", mine[0], watch[1:])
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			deadline := time.Now().Add(5 * time.Second)
			for _, pid := range watch {
				for processAlive(pid) {
					if time.Now().After(deadline) {
						syscall.Kill(pid, syscall.SIGKILL)
						t.Fatalf("process %d (of plugins %v and their children %v) outlived the killed host", pid, mine, watch[1:])
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
}

func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(fields) < 2 {
		return -1
	}
	n, _ := strconv.Atoi(fields[1])
	return n
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil && !isZombie(pid)
}

// childrenOf lists the live processes whose parent is pid.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		if c, err := strconv.Atoi(e.Name()); err == nil && ppid(c) == pid && processAlive(c) {
			out = append(out, c)
		}
	}
	return out
}

// ownPlugin returns the one process of the plugin binary at path that this
// test process started.
func ownPlugin(t *testing.T, path string) int {
	t.Helper()
	var mine []int
	for _, pid := range pidsOf(t, path) {
		if ppid(pid) == os.Getpid() {
			mine = append(mine, pid)
		}
	}
	if len(mine) != 1 {
		t.Fatalf("this process runs plugins %v of %s, want one", mine, filepath.Base(path))
	}
	return mine[0]
}

func TestChildHoldingOutputDoesNotHangClose(t *testing.T) {
	t.Parallel()
	h := New(Options{Dirs: []string{pluginDir}, StopDrain: 500 * time.Millisecond})
	if _, err := h.Info(context.Background(), "forker"); err != nil {
		t.Fatal(err)
	}
	plugin := ownPlugin(t, filepath.Join(pluginDir, Prefix+"forker"))
	children := childrenOf(t, plugin)
	if len(children) != 1 {
		t.Fatalf("plugin %d has children %v, want its sleep", plugin, children)
	}
	child := children[0]

	closed := make(chan error, 1)
	go func() { closed <- h.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		syscall.Kill(child, syscall.SIGKILL) // lets Close return
		t.Fatal("Close still waits after 15s for the output a plugin's child holds open")
	}
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(child) {
		if time.Now().After(deadline) {
			syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("the plugin's child %d outlived the plugin", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLongOutputLineDoesNotBlockPlugin(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	repo, err := h.Repository(ctx, "shouter", labelCfg)
	if err != nil {
		t.Fatal(err)
	}
	// Twice: the output after the long line is read too.
	for range 2 {
		if _, _, err := repo.Get(ctx, "shout"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Get after a 200 KiB line on stdout and stderr: %v, want not found", err)
		}
	}
}

func TestPluginSocketIsPrivateAndNeedsTLS(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	if _, err := h.Info(context.Background(), "good"); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	addr := h.running["good"].client.ReattachConfig().Addr
	h.mu.Unlock()
	if addr.Network() != "unix" {
		t.Fatalf("plugin listens on %s %s, want a unix socket", addr.Network(), addr)
	}
	root := filepath.Join(os.TempDir(), "ferry-"+strconv.Itoa(os.Getuid()))
	mine := filepath.Join(root, strconv.Itoa(os.Getpid()))
	if !strings.HasPrefix(addr.String(), mine+string(filepath.Separator)) {
		t.Fatalf("socket %s is not in this process's folder %s", addr, mine)
	}
	for _, dir := range []string{root, mine, filepath.Dir(addr.String())} {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("folder %s has mode %v, want 0700", dir, fi.Mode().Perm())
		}
	}

	// A process that knows the socket but not ferry's certificate gets
	// nothing out of the plugin.
	conn, err := grpc.NewClient("unix:"+addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pb.NewPluginClient(conn).GetInfo(ctx, &pb.Empty{}); err == nil {
		t.Fatal("a plaintext client without ferry's certificate called the plugin")
	}
}

func TestRemoveStaleSocketDirs(t *testing.T) {
	t.Parallel()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	names := map[string]bool{ // name: kept
		strconv.Itoa(dead.Process.Pid): false,
		strconv.Itoa(os.Getpid()):      true,
		strconv.Itoa(os.Getppid()):     true,
		"notes":                        true,
	}
	for name := range names {
		if err := os.MkdirAll(filepath.Join(root, name, "plugin-dir1"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name, "plugin-dir1", "plugin1"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removeStale(root)
	for name, kept := range names {
		_, err := os.Stat(filepath.Join(root, name))
		if kept && err != nil {
			t.Errorf("%s was removed: %v", name, err)
		}
		if !kept && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s of a dead process is still there: %v", name, err)
		}
	}
}

func TestPrivateDir(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := privateDir(open); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(open); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v after privateDir, want 0700", fi.Mode().Perm())
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(open, link); err != nil {
		t.Fatal(err)
	}
	if err := privateDir(link); err == nil || !strings.Contains(err.Error(), "is not a folder") {
		t.Errorf("privateDir of a symbolic link: %v, want a refusal", err)
	}
}

// BenchmarkRepositoryGet measures the connection to a plugin: a 4 MiB
// object read back through a real plugin process, as the disk data lane
// moves its chunks.
func BenchmarkRepositoryGet(b *testing.B) {
	h := New(Options{Dirs: []string{pluginDir}, StopDrain: time.Second})
	defer h.Close()
	ctx := context.Background()
	repo, err := h.Repository(ctx, "good", labelCfg)
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 4<<20)
	if _, err := repo.Put(ctx, "k", data, sdk.IfAny); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := repo.Get(ctx, "k"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStartStop measures the fixed cost of a plugin for every ferry
// command that uses one: starting it (the process, go-plugin's handshake,
// the TLS connection, its Info), reported as start-ms/op, and stopping it.
func BenchmarkStartStop(b *testing.B) {
	ctx := context.Background()
	var start time.Duration
	for b.Loop() {
		h := New(Options{Dirs: []string{pluginDir}, StopDrain: time.Second})
		t0 := time.Now()
		if _, err := h.Info(ctx, "good"); err != nil {
			b.Fatal(err)
		}
		start += time.Since(t0)
		if err := h.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(start.Microseconds())/1e3/float64(b.N), "start-ms/op")
}

// A block configured again is the instance configured first: the test
// plugin's repository keeps its objects in the instance, so what one
// caller puts the other reads. Another configuration is another instance,
// and a configuration the plugin refuses is refused every time.
func TestInstancesAreShared(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	first, err := h.Repository(ctx, "good", labelCfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Put(ctx, "k", []byte("v"), sdk.IfAbsent); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			again, err := h.Repository(ctx, "good", cty.ObjectVal(map[string]cty.Value{"label": cty.StringVal("ok")}))
			if err != nil {
				errs <- err
				return
			}
			if data, _, err := again.Get(ctx, "k"); err != nil || string(data) != "v" {
				errs <- fmt.Errorf("the same block configured again reads %q, %v: want the first instance's object", data, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	other, err := h.Repository(ctx, "good", cty.ObjectVal(map[string]cty.Value{"label": cty.StringVal("other")}))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.Get(ctx, "k"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("another configuration reads the first instance's object: %v", err)
	}
	bad := cty.ObjectVal(map[string]cty.Value{"label": cty.StringVal("bad")})
	for i := range 2 {
		if _, err := h.Repository(ctx, "good", bad); err == nil || !strings.Contains(err.Error(), "not allowed") {
			t.Fatalf("configuration the plugin refuses, call %d: %v", i+1, err)
		}
	}
}
