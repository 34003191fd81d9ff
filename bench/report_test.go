package bench

import (
	"strings"
	"testing"
	"time"
)

func run(wall time.Duration) Usage { return Usage{Wall: wall, MaxRSS: 50 << 20} }

func TestEvaluateGoals(t *testing.T) {
	good := &Report{Scenarios: []Scenario{
		{Key: KeyFull, Name: "full copy", Ferry: &FerryRun{Usage: run(3 * time.Second)}, Peer: &PeerRun{Usage: run(2 * time.Second)}},
		{Key: KeyTracked1, Name: "1% cbt", Changes: &ChangeInfo{Bytes: 40 << 20, ZstdBytes: 20 << 20},
			Ferry:     &FerryRun{Usage: run(400 * time.Millisecond)},
			FerryZstd: &FerryRun{Compression: "zstd", BytesSent: 25 << 20, Usage: Usage{Wall: time.Second, Procs: []ProcPeak{{HWM: 100 << 20}, {HWM: 60 << 20}}}},
			Peer:      &PeerRun{Usage: run(10 * time.Second)}},
		{Key: KeyDigest1, Name: "1% digest", Changes: &ChangeInfo{Bytes: 40 << 20, ZstdBytes: 20 << 20},
			Ferry:     &FerryRun{Usage: run(time.Second)},
			FerryZstd: &FerryRun{Compression: "zstd", BytesSent: 29 << 20, Usage: run(time.Second)},
			Peer:      &PeerRun{Usage: run(7 * time.Second)}},
	}}
	goals := EvaluateGoals(good)
	want := map[string]bool{
		"full copy vs cp --sparse=always":                   true, // 1.5x ≤ 2x
		"1% changed, digests (no change tracking) vs rsync": true, // 7x ≥ 6x
		"1% changed, change tracking vs rsync":              true, // 25x ≥ 20x
		"1% changed, change tracking: bytes sent (zstd)":    true, // 1.25x ≤ 1.5x
		"1% changed, digests: bytes sent (zstd)":            true, // 1.45x
		"peak memory of ferry and its plugins":              true, // 160 MiB summed
	}
	if len(goals) != len(want) {
		t.Fatalf("%d goals, want %d: %+v", len(goals), len(want), goals)
	}
	for _, g := range goals {
		if pass, ok := want[g.Name]; !ok || g.Pass != pass {
			t.Errorf("goal %q: pass %v (%s), want %v", g.Name, g.Pass, g.Measured, pass)
		}
	}
	if !good.Passed() {
		t.Error("Passed() = false")
	}

	bad := &Report{Scenarios: []Scenario{
		{Key: KeyFull, Name: "full copy", Ferry: &FerryRun{Usage: run(5 * time.Second)}, Peer: &PeerRun{Usage: run(2 * time.Second)}},
		{Key: KeyTracked1, Name: "1% cbt", Error: "ferry copied in mode digest"},
		{Key: KeyDigest1, Name: "1% digest", Changes: &ChangeInfo{ZstdBytes: 10},
			Ferry:     &FerryRun{Usage: Usage{Wall: 2 * time.Second, Procs: []ProcPeak{{HWM: 200 << 20}, {HWM: 100 << 20}}}},
			FerryZstd: &FerryRun{BytesSent: 16, Usage: run(time.Second)},
			Peer:      &PeerRun{Usage: run(7 * time.Second)}},
	}}
	for _, g := range EvaluateGoals(bad) {
		if g.Pass {
			t.Errorf("goal %q passed (%s), want it failed", g.Name, g.Measured)
		}
		if strings.HasPrefix(g.Name, "1% changed, change tracking") && g.Measured != "not measured" {
			t.Errorf("goal %q of a failed scenario: %q, want not measured", g.Name, g.Measured)
		}
	}
}

func TestWriteText(t *testing.T) {
	r := &Report{Size: 4 << 30, Seed: 1, Cache: "cold", Scenarios: []Scenario{
		{Key: KeyFull, Name: "1. full copy", Ferry: &FerryRun{Mode: "full", Usage: run(3 * time.Second)},
			Peer: &PeerRun{Tool: "cp --sparse=always", Usage: run(2 * time.Second)}},
		{Key: KeyTracked1, Name: "2. 1% changed", Error: "boom"},
	}}
	r.Goals = EvaluateGoals(r)
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1. full copy", "cp --sparse=always", "1.50x", "FAIL", "PASS", "2. 1% changed FAILED: boom", "4.0 GiB"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the text lacks %q:\n%s", want, b.String())
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 43 << 20: "43.0 MiB", 4 << 30: "4.0 GiB", 300 << 20: "300 MiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
