package bench

import (
	"strings"
	"testing"
	"time"
)

func run(wall time.Duration) Usage { return Usage{Wall: wall, MaxRSS: 50 << 20} }

// floored is a scenario with changes whose ferry run took ferry and whose
// floor took floor.
func floored(key string, tracked bool, ferry, floor time.Duration) Scenario {
	s := Scenario{Key: key, Name: key, Percent: 1, Tracked: tracked, Changes: &ChangeInfo{Bytes: 1 << 20},
		Ferry: &FerryRun{Usage: run(ferry)}, CopyFloor: &FloorRun{Usage: run(floor)}, HashFloor: &FloorRun{Usage: run(floor)}}
	if tracked {
		s.HashFloor = &FloorRun{Usage: run(time.Hour)} // not a tracked run's floor
	} else {
		s.CopyFloor = &FloorRun{Usage: run(time.Hour)}
	}
	return s
}

func TestEvaluateGoals(t *testing.T) {
	good := &Report{Size: 4 << 30, Scenarios: []Scenario{
		{Key: KeyFull, Name: "full copy", Ferry: &FerryRun{Usage: run(3 * time.Second)}, Peer: &PeerRun{Usage: run(2 * time.Second)}},
		{Key: KeyTracked1, Name: "1% cbt", Tracked: true, Changes: &ChangeInfo{Bytes: 40 << 20, ZstdBytes: 20 << 20},
			Ferry:     &FerryRun{Usage: run(400 * time.Millisecond)},
			FerryZstd: &FerryRun{Compression: "zstd", BytesSent: 25 << 20, Usage: Usage{Wall: time.Second, Procs: []ProcPeak{{HWM: 100 << 20}, {HWM: 60 << 20}}}},
			Peer:      &PeerRun{Usage: run(10 * time.Second)},
			CopyFloor: &FloorRun{Usage: run(200 * time.Millisecond)}},
		{Key: KeyDigest1, Name: "1% digest", Changes: &ChangeInfo{Bytes: 40 << 20, ZstdBytes: 20 << 20},
			Ferry:     &FerryRun{Usage: run(time.Second)},
			FerryZstd: &FerryRun{Compression: "zstd", BytesSent: 29 << 20, Usage: run(time.Second)},
			Peer:      &PeerRun{Usage: run(7 * time.Second)},
			HashFloor: &FloorRun{Usage: run(900 * time.Millisecond)}},
		floored(KeyTracked01, true, time.Second, 400*time.Millisecond),    // 2.5x: at the limit
		floored(KeyTracked10, true, 2*time.Second, time.Second),           // 2x
		floored(KeyDigest01, false, 1200*time.Millisecond, time.Second),   // 1.2x: at the limit
		floored(KeyDigest10, false, 2*time.Second, 1900*time.Millisecond), // 1.05x
	}, Big: &BigRun{Size: 64 << 30, Scenarios: []Scenario{
		{Key: KeyFull, Name: "full copy", Ferry: &FerryRun{Usage: Usage{Wall: time.Second, Procs: []ProcPeak{{HWM: 200 << 20}, {HWM: 56 << 20}}}}}, // 256 MiB: at the limit
	}}}
	goals := withoutProxies(t, EvaluateGoals(good))
	want := map[string]bool{
		"full copy vs cp --sparse=always":                            true, // 1.5x ≤ 2x
		"1% changed, digests (no change tracking) vs rsync":          true, // 7x ≥ 6x
		"1% changed, change tracking vs rsync":                       true, // 25x ≥ 20x
		"1% changed, change tracking: bytes sent (zstd)":             true, // 1.25x ≤ 1.5x
		"1% changed, digests: bytes sent (zstd)":                     true, // 1.45x
		"0.1% changed, change tracking vs its floor":                 true,
		"1% changed, change tracking vs its floor":                   true, // 2x
		"10% changed, change tracking vs its floor":                  true,
		"0.1% changed, digests vs its floor":                         true,
		"1% changed, digests vs its floor":                           true, // 1.11x
		"10% changed, digests vs its floor":                          true,
		"peak memory of ferry and its plugins, 4.0 GiB disk":         true, // 160 MiB summed
		"peak memory of ferry and its plugins, 64.0 GiB sparse disk": true,
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

	bad := &Report{Size: 4 << 30, Scenarios: []Scenario{
		{Key: KeyFull, Name: "full copy", Ferry: &FerryRun{Usage: run(5 * time.Second)}, Peer: &PeerRun{Usage: run(2 * time.Second)}},
		{Key: KeyTracked1, Name: "1% cbt", Error: "ferry copied in mode digest"},
		{Key: KeyDigest1, Name: "1% digest", Changes: &ChangeInfo{ZstdBytes: 10},
			Ferry:     &FerryRun{Usage: Usage{Wall: 2 * time.Second, Procs: []ProcPeak{{HWM: 200 << 20}, {HWM: 100 << 20}}}},
			FerryZstd: &FerryRun{BytesSent: 16, Usage: run(time.Second)},
			Peer:      &PeerRun{Usage: run(7 * time.Second)},
			HashFloor: &FloorRun{Usage: run(1600 * time.Millisecond)}}, // 1.25x
		floored(KeyTracked01, true, 1010*time.Millisecond, 400*time.Millisecond), // just past 2.5x
		floored(KeyTracked10, true, 3*time.Second, time.Second),
		floored(KeyDigest01, false, 1300*time.Millisecond, time.Second),
		{Key: KeyDigest10, Name: "10% digest", Error: "boom"},
	}, Big: &BigRun{Size: 64 << 30, Scenarios: []Scenario{
		{Key: KeyFull, Name: "full copy", Ferry: &FerryRun{Usage: Usage{Wall: time.Second, Procs: []ProcPeak{{HWM: 200 << 20}, {HWM: 57 << 20}}}}},
	}}}
	goals = withoutProxies(t, EvaluateGoals(bad))
	if len(goals) != len(want) {
		t.Fatalf("%d goals of a bad run, want %d", len(goals), len(want))
	}
	for _, g := range goals {
		if g.Pass {
			t.Errorf("goal %q passed (%s), want it failed", g.Name, g.Measured)
		}
		if (strings.HasPrefix(g.Name, "1% changed, change tracking") || strings.HasPrefix(g.Name, "10% changed, digests")) && g.Measured != "not measured" {
			t.Errorf("goal %q of a failed scenario: %q, want not measured", g.Name, g.Measured)
		}
	}

	// Without the big disk's run its goal is skipped: neither passed nor failed.
	good.Big = nil
	good.Goals = EvaluateGoals(good)
	goals = withoutProxies(t, good.Goals)
	last := goals[len(goals)-1]
	if !last.Skipped || last.Pass {
		t.Errorf("the big disk's goal without its run: %+v, want skipped", last)
	}
	if !good.Passed() {
		t.Error("a skipped goal made Passed() false")
	}
}

// withoutProxies is goals less the proxy set's, the VHDX run's and the
// server run's, which a report without them (-proxies=false, -vhdx=false,
// -server=false) has skipped.
func withoutProxies(t *testing.T, goals []Goal) []Goal {
	t.Helper()
	var out []Goal
	for _, g := range goals {
		if strings.Contains(g.Name, "proxies") || strings.Contains(g.Name, "proxy") {
			if !g.Skipped || g.Measured != "skipped (-proxies=false)" {
				t.Errorf("goal %q of a run without proxies: %+v, want skipped", g.Name, g)
			}
			continue
		}
		if strings.HasPrefix(g.Name, "in ferry server: ") {
			if !g.Skipped || g.Measured != "skipped (-served=false or -direct=false)" {
				t.Errorf("goal %q of a run without the served scenarios: %+v, want skipped", g.Name, g)
			}
			continue
		}
		if strings.HasPrefix(g.Name, "server: ") {
			if !g.Skipped || g.Measured != "skipped (-server=false)" {
				t.Errorf("goal %q of a run without the server run: %+v, want skipped", g.Name, g)
			}
			continue
		}
		if strings.HasPrefix(g.Name, "VHDX library") {
			if !g.Skipped || g.Measured != "skipped (-vhdx=false)" {
				t.Errorf("goal %q of a run without the VHDX run: %+v, want skipped", g.Name, g)
			}
			continue
		}
		out = append(out, g)
	}
	return out
}

func TestScenarioFloor(t *testing.T) {
	full := Scenario{Key: KeyFull, Ferry: &FerryRun{Usage: run(time.Second)}, CopyFloor: &FloorRun{Usage: run(time.Second)}}
	if f := full.Floor(); f != nil {
		t.Errorf("the full copy's floor: %+v, want none", f)
	}
	tracked := floored(KeyTracked1, true, 3*time.Second, 2*time.Second)
	if v, ok := tracked.OverFloor(); !ok || v != 1.5 {
		t.Errorf("tracked over its floor: %v, %v; want 1.5 (the copy floor)", v, ok)
	}
	digest := floored(KeyDigest1, false, 3*time.Second, 2*time.Second)
	if v, ok := digest.OverFloor(); !ok || v != 1.5 {
		t.Errorf("digests over its floor: %v, %v; want 1.5 (the hash floor)", v, ok)
	}
	digest.HashFloor = nil
	if _, ok := digest.OverFloor(); ok {
		t.Error("a digest run without its hash floor has a ratio")
	}
}

func TestWriteText(t *testing.T) {
	r := &Report{Size: 4 << 30, Seed: 1, Cache: "cold", Scenarios: []Scenario{
		{Key: KeyFull, Name: "1. full copy", Ferry: &FerryRun{Mode: "full", Usage: run(3 * time.Second)},
			Peer: &PeerRun{Tool: "cp --sparse=always", Usage: run(2 * time.Second)}},
		{Key: KeyTracked01, Name: "2. 0.1% changed", Tracked: true, Percent: 0.1, Ferry: &FerryRun{Mode: "change-tracking", Usage: run(time.Second)},
			CopyFloor: &FloorRun{Name: "floor: copy changed", Usage: run(250 * time.Millisecond)}},
		{Key: KeyTracked1, Name: "3. 1% changed", Error: "boom"},
	}, Big: &BigRun{Size: 64 << 30, DataBytes: 1 << 30, Stride: 64, Scenarios: []Scenario{
		{Key: KeyFull, Name: "1. full copy", Ferry: &FerryRun{Mode: "full", Usage: Usage{Wall: time.Second, MaxRSS: 90 << 20}}},
	}}}
	r.Goals = EvaluateGoals(r)
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1. full copy", "cp --sparse=always", "1.50x", "FAIL", "PASS", "3. 1% changed FAILED: boom", "4.0 GiB",
		"floor: copy changed", "4.00x", "64.0 GiB sparse disk", "1.0 GiB of data", "1.80x"} {
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

// TestServedGoals: the scenarios through ferry server are judged by their
// sessions' time, not by the client's wall time; a served scenario that
// failed or is missing fails its goal.
func TestServedGoals(t *testing.T) {
	served := func(key string, tracked bool, session, wall, floor time.Duration) Scenario {
		s := floored(key, tracked, wall, floor)
		s.Ferry.Session = session
		return s
	}
	r := &Report{Size: 4 << 30, Served: &ServedRun{Scenarios: []Scenario{
		served(KeyTracked01, true, 100*time.Millisecond, 600*time.Millisecond, 50*time.Millisecond),  // 2x, the client 12x
		served(KeyTracked1, true, 260*time.Millisecond, 300*time.Millisecond, 100*time.Millisecond),  // 2.6x
		served(KeyTracked10, true, 1500*time.Millisecond, 2*time.Second, 600*time.Millisecond),       // 2.5x: at the limit
		served(KeyDigest01, false, 290*time.Millisecond, 300*time.Millisecond, 250*time.Millisecond), // 1.16x
		{Key: KeyDigest1, Name: "1% digest", Error: "ferry copied in mode full"},
	}}}
	want := map[string]string{
		"in ferry server: 0.1% changed, change tracking vs its floor": "PASS 2.00x (0.10s vs 0.05s)",
		"in ferry server: 1% changed, change tracking vs its floor":   "FAIL 2.60x (0.26s vs 0.10s)",
		"in ferry server: 10% changed, change tracking vs its floor":  "PASS 2.50x (1.50s vs 0.60s)",
		"in ferry server: 0.1% changed, digests vs its floor":         "PASS 1.16x (0.29s vs 0.25s)",
		"in ferry server: 1% changed, digests vs its floor":           "FAIL not measured",
		"in ferry server: 10% changed, digests vs its floor":          "FAIL not measured",
	}
	got := map[string]string{}
	for _, g := range EvaluateGoals(r) {
		if strings.HasPrefix(g.Name, "in ferry server: ") {
			res := "FAIL"
			if g.Pass {
				res = "PASS"
			}
			got[g.Name] = res + " " + g.Measured
		}
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %q, want %q", name, got[name], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("served goals %v", got)
	}
	if !r.Failed() {
		t.Error("a report whose served scenario failed is not Failed")
	}
	var text strings.Builder
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "through ferry server") || !strings.Contains(text.String(), "2.00x") {
		t.Errorf("the text lacks the served table:\n%s", text.String())
	}
}
