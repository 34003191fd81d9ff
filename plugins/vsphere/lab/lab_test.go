package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/klauspost/compress/zstd"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestRenderConfig compares the configuration with its golden file and
// parses it as HCL.
func TestRenderConfig(t *testing.T) {
	got := renderConfig(configInput{
		Dir:      "/home/u/.ferry/lab",
		Password: "lab-0123456789abcdef01234567",
		Prod: SiteInfo{Name: "prod", URL: "https://127.0.0.1:41001/sdk", Username: username, CAFile: "prod-ca.pem",
			Datacenter: "DC0", Datastore: "LocalDS_0", DatastorePath: "/home/u/.ferry/lab/sites/govcsim-1/DC0-LocalDS_0"},
		DR: SiteInfo{Name: "dr", URL: "https://127.0.0.1:41002/sdk", Username: username, Thumbprint: "52:6C:4E:88:1D:78:AE:12:1C:F3:BB:6C:5B:F4:E2:82:86:A7:08:AF",
			Datacenter: "DC0", Datastore: "LocalDS_0", DatastorePath: "/home/u/.ferry/lab/sites/govcsim-2/DC0-LocalDS_0"},
		VMs: vmNames(labVMs),
	})
	golden := filepath.Join("testdata", "lab.hcl.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("the configuration differs from %s (go test -run TestRenderConfig -update):\n%s", golden, got)
	}
	if _, diags := hclsyntax.ParseConfig([]byte(got), "lab.hcl", hclStart()); diags.HasErrors() {
		t.Fatalf("the configuration is not HCL: %v", diags)
	}
}

// TestHCLString: paths and passwords become literals that HCL reads back
// unchanged, template sequences included.
func TestHCLString(t *testing.T) {
	for _, s := range []string{"/tmp/lab", `/tmp/a "b"\c`, "/tmp/${HOME}/%{x}", "pässwörd", "tab\there"} {
		src := "x = " + hclString(s) + "\n"
		f, diags := hclsyntax.ParseConfig([]byte(src), "t.hcl", hclStart())
		if diags.HasErrors() {
			t.Fatalf("%q: %v", s, diags)
		}
		attrs, _ := f.Body.JustAttributes()
		v, diags := attrs["x"].Expr.Value(nil)
		if diags.HasErrors() || v.AsString() != s {
			t.Fatalf("%q reads back as %#v (%v)", s, v, diags)
		}
	}
}

// TestDiskLayout: regions inside the disk, aligned, in order, the first
// one at the start, and between a quarter and three quarters of the disk
// holding data.
func TestDiskLayout(t *testing.T) {
	for _, size := range []int64{1 << 20, 16 << 20, 96 << 20} {
		rng := rand.New(rand.NewPCG(uint64(size), 1))
		regions := diskLayout(rng, size)
		var data, end int64
		for i, r := range regions {
			if r.off < end || r.off%dataBlock != 0 || r.len <= 0 || r.off+r.len > size || r.kind == zeros {
				t.Fatalf("size %d: region %d %+v after %d", size, i, r, end)
			}
			end = r.off + r.len
			data += r.len
		}
		if len(regions) == 0 || regions[0].off != 0 {
			t.Fatalf("size %d: the first region holds no data: %+v", size, regions)
		}
		if size >= 16<<20 && (data < size/4 || data > size*3/4) {
			t.Errorf("size %d: %d bytes of data, not disk-like", size, data)
		}
	}
}

func TestScatter(t *testing.T) {
	sizes := []int64{64 << 20, 16 << 20, 8192}
	tests := []struct {
		name  string
		disk  int
		count int
	}{
		{"any disk", -1, 200},
		{"every disk once at least", -1, 3},
		{"disk 1", 1, 50},
		{"a disk smaller than the longest write", 2, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 7))
			ws := scatter(rng, sizes, tt.disk, tt.count)
			if len(ws) != tt.count {
				t.Fatalf("%d writes, want %d", len(ws), tt.count)
			}
			disks := map[int]bool{}
			for _, w := range ws {
				disks[w.Disk] = true
				if tt.disk >= 0 && w.Disk != tt.disk {
					t.Fatalf("a write on disk %d, want %d", w.Disk, tt.disk)
				}
				if w.Offset%dataBlock != 0 || w.Length%dataBlock != 0 || w.Length < dataBlock || w.Length > 64<<10 || w.Offset+w.Length > sizes[w.Disk] {
					t.Fatalf("write %+v on a disk of %d bytes", w, sizes[w.Disk])
				}
			}
			if tt.disk < 0 && len(disks) != len(sizes) {
				t.Fatalf("writes on disks %v only", disks)
			}
		})
	}
}

// TestFill: text compresses well and is printable, random data does not
// compress, zeros are zeros.
func TestFill(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	b := make([]byte, 1<<20)
	fill(rng, text, b)
	for i, c := range b {
		if c != '\n' && (c < ' ' || c > '~') {
			t.Fatalf("text byte %d is %#x", i, c)
		}
	}
	if n := len(enc.EncodeAll(b, nil)); n > len(b)/2 {
		t.Errorf("text compresses to %d of %d bytes", n, len(b))
	}
	fill(rng, random, b)
	if n := len(enc.EncodeAll(b, nil)); n < len(b)*99/100 {
		t.Errorf("random data compresses to %d of %d bytes", n, len(b))
	}
	fill(rng, zeros, b)
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Error("zeros are not zero")
	}
}

func TestCheckFolder(t *testing.T) {
	tests := []struct {
		name      string
		files     []string
		wantState bool
		wantErr   string
	}{
		{"missing", nil, false, ""},
		{"empty", []string{}, false, ""},
		{"the log of an up that failed", []string{logFile}, false, ""},
		{"a lab", []string{stateFile, logFile, configDir + "/lab.hcl"}, true, ""},
		{"someone's files", []string{"notes.txt", configDir + "/main.hcl"}, false, "config, notes.txt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "lab")
			if tt.files != nil {
				writeFiles(t, dir, tt.files...)
			}
			has, err := checkFolder(dir)
			if tt.wantErr == "" && err != nil || has != tt.wantState {
				t.Fatalf("state %v, error %v", has, err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), dir)) {
				t.Fatalf("error %v, want one naming %s and %s", err, dir, tt.wantErr)
			}
		})
	}
}

func writeFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRemoveLab removes the lab's names only, and the folder when nothing
// else is left.
func TestRemoveLab(t *testing.T) {
	labFiles := []string{stateFile, logFile, socketFile, configDir + "/lab.hcl", configDir + "/.ferry/catalog.db", repoDir + "/x", sitesDir + "/govcsim-1/f"}
	dir := filepath.Join(t.TempDir(), "lab")
	writeFiles(t, dir, append(labFiles, "mine.txt")...)
	if err := removeLab(dir, nil, false); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "mine.txt" {
		t.Fatalf("left: %v", entries)
	}
	os.Remove(filepath.Join(dir, "mine.txt"))
	writeFiles(t, dir, labFiles...)
	if err := removeLab(dir, nil, true); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != logFile {
		t.Fatalf("keeping the log left: %v", entries)
	}
	if err := removeLab(dir, nil, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the empty lab folder is still there: %v", err)
	}
}

func TestSocketPath(t *testing.T) {
	if p := socketPath("/tmp/lab"); p != "/tmp/lab/lab.sock" {
		t.Fatalf("short folder: %s", p)
	}
	deep := "/tmp/" + strings.Repeat("a-deep-folder/", 8)
	p := socketPath(deep)
	if len(p) >= 100 || !strings.HasPrefix(filepath.Base(p), "ferry-lab-") || p != socketPath(deep) || p == socketPath(deep+"x") {
		t.Fatalf("deep folder: %s", p)
	}
}

// TestShellQuote: what the lab prints can be pasted into a shell.
func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/lab":         "/tmp/lab",
		"/tmp/my lab":      "'/tmp/my lab'",
		"/tmp/it's":        `'/tmp/it'\''s'`,
		"":                 "''",
		"/tmp/$HOME/a;b&c": "'/tmp/$HOME/a;b&c'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(in)).Output()
		if err != nil || string(out) != in {
			t.Errorf("the shell reads %s as %q (%v)", shellQuote(in), out, err)
		}
	}
}

// smallVMs keep the server tests quick under the race detector.
var smallVMs = []labVM{
	{name: "app-01", cpus: 1, memoryMB: 512, disks: []int64{2 << 20, 1 << 20}, ip: "10.1.0.31/24"},
	{name: "app-02", cpus: 1, memoryMB: 512, disks: []int64{1 << 20}, ip: "10.1.0.32/24"},
}

// startTestServer runs a lab server in this process, as `serve` does.
func startTestServer(t *testing.T) (*server, string) {
	t.Helper()
	return startLabServer(t, drVSphere, smallVMs)
}

// startLabServer runs a lab server with a dr site of kind drKind.
func startLabServer(t *testing.T, drKind string, vms []labVM) (*server, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lab")
	if err := os.MkdirAll(filepath.Join(dir, sitesDir), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", filepath.Join(dir, sitesDir))
	ctx, cancel := context.WithCancel(context.Background())
	s, err := startServer(ctx, dir, socketPath(dir), drKind, vms, log.New(io.Discard, "", 0))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		s.serve(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s, dir
}

// cli runs the lab's command line on dir.
func cli(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := RunCLI(context.Background(), append(args, "--dir", dir), &out, &errb)
	return out.String() + errb.String(), err
}

// TestServer drives an in-process server through the command line: the
// state and configuration it writes, status as the simulator reports it,
// guest writes landing in the disks, bad requests, and a stop that
// removes the sites and the socket.
func TestServer(t *testing.T) {
	s, dir := startTestServer(t)

	st, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != os.Getpid() || st.Socket != filepath.Join(dir, socketFile) || len(st.Sites) != 2 || strings.Join(st.VMs, ",") != "app-01,app-02" {
		t.Fatalf("state: %+v", st)
	}
	// Each site has a certificate of its own, not the one Go's test
	// servers share, and its CA file verifies it for the site's address.
	if st.Sites[0].Thumbprint == st.Sites[1].Thumbprint || st.Sites[0].Thumbprint == sharedTestThumbprint {
		t.Fatalf("thumbprints: %s and %s", st.Sites[0].Thumbprint, st.Sites[1].Thumbprint)
	}
	verifyCA(t, filepath.Join(dir, configDir, "prod-ca.pem"), st.Sites[0].URL)
	for _, site := range st.Sites {
		if fi, err := os.Stat(site.DatastorePath); err != nil || !fi.IsDir() || !strings.HasPrefix(site.DatastorePath, filepath.Join(dir, sitesDir)) {
			t.Fatalf("site %s: datastore %s outside the lab's sites folder (%v)", site.Name, site.DatastorePath, err)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(dir, configDir, configFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{st.Sites[0].URL, st.Sites[1].URL, st.Sites[1].Thumbprint, `ca_file    = "prod-ca.pem"`, `vms        = ["app-01", "app-02"]`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("the configuration lacks %s:\n%s", want, cfg)
		}
	}

	out, err := cli(t, dir, "status", "--json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var status Status
	if err := json.Unmarshal([]byte(out), &status); err != nil {
		t.Fatal(err)
	}
	prod, dr := status.Sites[0], status.Sites[1]
	if prod.Name != "prod" || len(prod.VMs) != 2 || dr.Name != "dr" || len(dr.VMs) != 0 {
		t.Fatalf("status: %+v", status)
	}
	if vm := prod.VMs[0]; vm.Name != "app-01" || vm.PowerState != "poweredOn" || vm.IPAddress != "10.1.0.31" || len(vm.Disks) != 2 || vm.Disks[0] != 2<<20 ||
		len(vm.NICs) != 1 || vm.NICs[0].Network != prodNet || strings.Join(vm.NICs[0].Addresses, ",") != "10.1.0.31" {
		t.Fatalf("app-01: %+v", vm)
	}
	if out, err := cli(t, dir, "status"); err != nil || !strings.Contains(out, "app-02  poweredOn  10.1.0.32") {
		t.Fatalf("status: %v\n%s", err, out)
	}

	// Guest writes land in the disk they name.
	before := s.prod.Disk(t, "app-01", 1)
	out, err = cli(t, dir, "write", "app-01", "--disk", "1", "--count", "5", "--json")
	if err != nil {
		t.Fatalf("write: %v\n%s", err, out)
	}
	var writes []Write
	if err := json.Unmarshal([]byte(out), &writes); err != nil || len(writes) != 5 {
		t.Fatalf("writes %v: %s", err, out)
	}
	after := s.prod.Disk(t, "app-01", 1)
	for _, w := range writes {
		if w.Disk != 1 || bytes.Equal(before[w.Offset:w.Offset+w.Length], after[w.Offset:w.Offset+w.Length]) {
			t.Fatalf("write %+v did not change the disk", w)
		}
	}
	if out, err := cli(t, dir, "write", "app-02"); err != nil || !strings.Contains(out, "app-02: 16 guest writes") || !strings.Contains(out, "disk 0: 16 writes") {
		t.Fatalf("write: %v\n%s", err, out)
	}

	// Bad requests name the VM and the lab, with their class.
	for _, tt := range []struct {
		args  []string
		want  string
		class error
	}{
		{[]string{"write", "db-99"}, `lab in ` + dir + `: vm "db-99" is not a VM of the lab's prod site (app-01, app-02)`, errdefs.ErrNotFound},
		{[]string{"write", "app-02", "--disk", "3"}, `vm "app-02" has 1 disks (0 to 0), no disk 3`, errdefs.ErrInvalidArgument},
		{[]string{"write", "app-02", "--count", "20000"}, `vm "app-02": 20000 writes: from 1 to 10000`, errdefs.ErrInvalidArgument},
	} {
		if out, err := cli(t, dir, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, tt.class) {
			t.Errorf("%v: %v, want %q (%v)\n%s", tt.args, err, tt.want, tt.class, out)
		}
	}

	resp, err := ask(context.Background(), st.Socket, request{Op: opStop})
	if err != nil || resp.PID != os.Getpid() {
		t.Fatalf("stop: %v %+v", err, resp)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, serr := os.Stat(filepath.Join(dir, sitesDir))
		_, kerr := os.Stat(st.Socket)
		if errors.Is(serr, os.ErrNotExist) && errors.Is(kerr, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after stop: sites %v, socket %v", serr, kerr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := ask(context.Background(), st.Socket, request{Op: opPing}); !errors.Is(err, errNotAnswering) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a stopped server answers: %v", err)
	}
}

// TestNoLab: commands on a folder without a lab, or with one whose server
// is gone, say so and what to do.
func TestNoLab(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"down"}, "no lab in " + dir + " (no lab.json): nothing to stop"},
		{[]string{"status"}, "no lab in " + dir + " (no lab.json): start one with"},
		{[]string{"write", "web-01"}, "no lab in " + dir},
	} {
		if out, err := cli(t, dir, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("%v: %v, want %q\n%s", tt.args, err, tt.want, out)
		}
	}

	// A lab whose server died: status says so; down removes its files and
	// leaves the user's.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, logFile, configDir+"/lab.hcl", "mine.txt")
	if err := saveState(dir, &State{Version: stateVersion, PID: gone.Process.Pid, Socket: filepath.Join(dir, socketFile)}); err != nil {
		t.Fatal(err)
	}
	if out, err := cli(t, dir, "status"); err == nil || !strings.Contains(err.Error(), "the lab in "+dir+" is not running") || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("status of a dead lab: %v\n%s", err, out)
	}
	out, err := cli(t, dir, "down")
	if err != nil || !strings.Contains(out, "was not running") {
		t.Fatalf("down of a dead lab: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != "mine.txt" {
		t.Fatalf("left after down: %v", entries)
	}
	// up refuses a folder that is someone else's.
	if out, err := cli(t, dir, "up"); err == nil || !strings.Contains(err.Error(), "holds no lab (mine.txt") || !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("up on someone's folder: %v\n%s", err, out)
	}
}

func TestUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"fly"}, `unknown command "fly"`},
		{[]string{"write"}, "want 1 argument(s), got 0"},
		{[]string{"down", "extra"}, `unexpected argument "extra"`},
		{[]string{"write", "web-01", "--count", "0"}, "at least one write"},
		{[]string{"status", "--fast"}, "flag provided but not defined"},
	} {
		err := RunCLI(context.Background(), tt.args, io.Discard, io.Discard)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want a usage error with %q", tt.args, err, tt.want)
		}
	}
	var out bytes.Buffer
	if err := RunCLI(context.Background(), []string{"write", "-h"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "--count") {
		t.Fatalf("write -h: %v\n%s", err, out.String())
	}
}

func hclStart() hcl.Pos { return hcl.Pos{Line: 1, Column: 1} }

// sharedTestThumbprint is the SHA-1 thumbprint of the certificate all of
// Go's httptest servers use.
const sharedTestThumbprint = "52:6C:4E:88:1D:78:AE:12:1C:F3:BB:6C:5B:F4:E2:82:86:A7:08:AF"

// verifyCA connects to url trusting only the PEM file ca, with the host
// name checked.
func verifyCA(t *testing.T, ca, url string) {
	t.Helper()
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", ca)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("%s with %s: %v", url, ca, err)
	}
	resp.Body.Close()
	c.CloseIdleConnections()
}
