package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVHDXGoals(t *testing.T) {
	goals := vhdxGoals(&VHDXRun{Size: 1 << 30, WriteRaw: 1, WriteVHDX: 1.2, ReadRaw: 1, ReadVHDX: 2})
	if len(goals) != 2 || !goals[0].Pass || goals[1].Pass || !strings.HasPrefix(goals[0].Measured, "83%") || !strings.HasPrefix(goals[1].Measured, "50%") {
		t.Fatalf("goals %+v", goals)
	}
	for _, g := range vhdxGoals(&VHDXRun{Error: "no room"}) {
		if g.Pass || g.Skipped || g.Measured != "not measured" {
			t.Errorf("goal of a failed run: %+v", g)
		}
	}
	r := &Report{VHDX: &VHDXRun{Error: "no room"}}
	if !r.Failed() {
		t.Error("a failed VHDX run does not fail the report")
	}
}

// TestVHDXRunReadsBackTheImage runs the VHDX scenario on a small image.
func TestVHDXRunReadsBackTheImage(t *testing.T) {
	dir := t.TempDir()
	b := &bench{scratch: dir, size: 8 << 20, cfg: Config{Warm: true}}
	b.disk = filepath.Join(dir, "disk0.img")
	data := make([]byte, b.size)
	for i := range data {
		data[i] = byte(i * 7 / 4096) // some blocks of zeros, most not
	}
	if err := os.WriteFile(b.disk, data, 0o644); err != nil {
		t.Fatal(err)
	}
	run := b.runVHDX(context.Background())
	if run.Error != "" || run.WriteRaw <= 0 || run.WriteVHDX <= 0 || run.ReadRaw <= 0 || run.ReadVHDX <= 0 {
		t.Fatalf("run %+v", run)
	}
	var text strings.Builder
	(&Report{VHDX: run}).writeVHDX(&text)
	if !strings.Contains(text.String(), "dynamic VHDX") {
		t.Fatalf("text %q", text.String())
	}
}
