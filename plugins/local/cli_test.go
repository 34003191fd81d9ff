package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{"4096", 4096, false},
		{"64MiB", 64 << 20, false},
		{"1GiB", 1 << 30, false},
		{"512M", 512 << 20, false},
		{"1G", 1 << 30, false},
		{"1g", 1 << 30, false},
		{"1.5KiB", 1536, false},
		{"1GB", 1e9, false},
		{"10B", 10, false},
		{"", 0, true},
		{"MiB", 0, true},
		{"-1", 0, true},
		{"1.3B", 0, true},
		{"lots", 0, true},
		{"99999999999T", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, bad=%v", tt.in, got, err, tt.want, tt.bad)
		}
	}
	for _, n := range []int64{1, 4096, 64 << 20, 3 << 30, 1<<20 + 1} {
		if back, err := ParseSize(FormatSize(n)); err != nil || back != n {
			t.Errorf("FormatSize(%d) = %q does not parse back", n, FormatSize(n))
		}
	}
}

func runCLI(args string, stdin []byte) (string, string, error) {
	var out, errb bytes.Buffer
	err := RunCLI(context.Background(), strings.Fields(args), bytes.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

// TestCLI drives the CLI functions: usage errors are UsageErrors, other
// errors name what failed, and the verbs do what they say.
func TestCLI(t *testing.T) {
	site := t.TempDir()
	usage := []string{
		"", "nope", "vm", "vm frob", "vm create " + site, "vm create " + site + " x",
		"vm create " + site + " x --disk banana", "vm create " + site + " x --disk 1M --nic =1.2.3.4/8",
		"vm create " + site + " x --disk 1M --nic lan=1.2.3.4", "vm write " + site + " x y 0",
		"vm write " + site + " x 0 -5", "vm read " + site, "vm resize " + site + " x 0 big", "vm show --bogus a b",
	}
	for _, u := range usage {
		_, _, err := runCLI(u, nil)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", u, err)
		}
	}
	for _, h := range []string{"help", "--help", "vm help", "vm create --help", "vm write -h", "vm read --help"} {
		out, _, err := runCLI(h, nil)
		if err != nil || !strings.Contains(out, "usage") && !strings.Contains(out, "ferry-plugin-local vm") {
			t.Errorf("%q: %v, %q", h, err, out)
		}
	}
	if _, _, err := runCLI("vm create "+site+" web --disk 1MiB --disk 64K --nic prod=10.1.0.5/24 --cpus 4 --memory 4096", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI("vm create "+site+" web --disk 1MiB", nil); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("create twice: %v", err)
	}
	data := bytes.Repeat([]byte("ferry"), 1000)
	if _, _, err := runCLI("vm write "+site+" web 1 1000", data); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI("vm read "+site+" web 1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 64<<10 || out[1000:1000+len(data)] != string(data) {
		t.Errorf("read back %d bytes", len(out))
	}
	if _, _, err := runCLI("vm write "+site+" web 1 64KiB", []byte("x")); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "disk 1") {
		t.Errorf("write past the end: %v", err)
	}
	if _, _, err := runCLI("vm write "+site+" ghost 0 0", []byte("x")); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("write to a missing VM: %v", err)
	}
	if _, _, err := runCLI("vm resize "+site+" web 0 2MiB", nil); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI("vm show "+site+" web --json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var vm sdk.VM
	if err := json.Unmarshal([]byte(out), &vm); err != nil {
		t.Fatal(err)
	}
	if vm.CPUs != 4 || vm.MemoryMiB != 4096 || vm.Disks[0].Capacity != 2<<20 || vm.NICs[0].Addresses[0] != "10.1.0.5/24" || vm.NICs[0].MAC == "" {
		t.Errorf("vm %+v", vm)
	}
	out, _, err = runCLI("vm show "+site+" web", nil)
	if err != nil || !strings.Contains(out, "2MiB") || !strings.Contains(out, "prod") {
		t.Errorf("show: %v\n%s", err, out)
	}
	out, _, err = runCLI("vm list "+site, nil)
	if err != nil || !strings.Contains(out, "web") {
		t.Errorf("list: %v\n%s", err, out)
	}
	if st, _ := os.Stat(filepath.Join(site, "web", "disk0.img")); st.Size() != 2<<20 {
		t.Errorf("disk0.img is %d bytes", st.Size())
	}
	if b, _ := allocatedBytes(filepath.Join(site, "web", "disk0.img")); b > 64<<10 {
		t.Errorf("a new disk is not sparse: %d bytes allocated", b)
	}
}

// TestCLIFolderAndTags: vm create puts a VM in a folder with tags, which
// the source reports and lists; bad ones are refused; a VM without a
// folder is in the root.
func TestCLIFolderAndTags(t *testing.T) {
	site := t.TempDir()
	if _, _, err := runCLI("vm create "+site+" web --disk 1MiB --folder /prod/web --tag tier/gold --tag backup --tag tier/gold", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI("vm create "+site+" db --disk 1MiB --tag tier/silver", nil); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"--folder prod/web", "--folder /prod//web", "--folder /prod/", "--tag /gold", "--tag tier/", "--tag ' gold'"} {
		args := strings.Fields("vm create " + site + " bad --disk 1MiB")
		flag, val, _ := strings.Cut(bad, " ")
		args = append(args, flag, strings.Trim(val, "'"))
		var out, errb bytes.Buffer
		if err := RunCLI(context.Background(), args, nil, &out, &errb); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", bad, err)
		}
	}
	src, err := NewSource(site)
	if err != nil {
		t.Fatal(err)
	}
	vms, err := src.ListVMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, vm := range vms {
		got[vm.Name] = vm.Folder + " " + strings.Join(vm.Tags, ",")
	}
	if got["web"] != "/prod/web backup,tier/gold" || got["db"] != "/ tier/silver" || len(got) != 2 {
		t.Fatalf("listed %q", got)
	}
	tags, err := src.ListTags(context.Background())
	if err != nil || strings.Join(tags, ",") != "backup,tier/gold,tier/silver" {
		t.Fatalf("ListTags = %q, %v", tags, err)
	}
	out, _, err := runCLI("vm list "+site, nil)
	if err != nil || !strings.Contains(out, "/prod/web") || !strings.Contains(out, "backup tier/gold") {
		t.Errorf("list: %v\n%s", err, out)
	}
}
