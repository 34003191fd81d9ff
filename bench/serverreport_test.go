package bench

import (
	"strings"
	"testing"
	"time"
)

// goodServerRun is a server run that meets every goal.
func goodServerRun() *ServerRun {
	return &ServerRun{Jobs: 100, VMsPerJob: 10, DiskBytes: 4 << 20, DataBytes: 256 << 10, Every: 5 * time.Minute,
		Schedules: "every 5m staggered by minute", MaxSessions: 4, Runs: 2, SetupSeconds: 12, Window: 9 * time.Minute,
		Sessions: ServerSessions{Expected: 200, Started: 200, Ended: 200, Succeeded: 200, Waited: 120, Waves: 20,
			Delay:       Spread{N: 80, P50: 2 * time.Millisecond, P99: 30 * time.Millisecond, Max: 2 * time.Second},
			WaitedDelay: Spread{N: 120, P50: 4 * time.Second, P99: 9 * time.Second, Max: 9 * time.Second}, Latest: "s042 due 10:07:00",
			Handoff: Spread{N: 120, P50: time.Millisecond, P99: 3 * time.Millisecond, Max: 2 * time.Second}},
		Memory: ServerMemory{Peak: 255 << 20, End: 90 << 20, TreeRSS: 300 << 20, TreeHWM: 310 << 20, Every: 250 * time.Millisecond,
			CPU: 54 * time.Second, TreeCPU: 270 * time.Second, BenchCPU: 27 * time.Second},
		API: APILatency{Every: 200 * time.Millisecond, Requests: 2700,
			Latency: Spread{N: 2700, P50: 2 * time.Millisecond, P99: 45 * time.Millisecond, Max: 80 * time.Millisecond},
			Busy:    Spread{N: 2000, P50: 3 * time.Millisecond, P99: 49 * time.Millisecond, Max: 80 * time.Millisecond},
			Idle:    Spread{N: 700, P50: time.Millisecond, P99: 2 * time.Millisecond, Max: 4 * time.Millisecond}}}
}

func TestServerGoals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*ServerRun)
		want   [3]bool // start, memory, API
	}{
		{"at the limits", func(*ServerRun) {}, [3]bool{true, true, true}},
		{"a session 1 ms late", func(s *ServerRun) { s.Sessions.Delay.Max = 2*time.Second + time.Millisecond }, [3]bool{false, true, true}},
		{"a due time without a session", func(s *ServerRun) { s.Sessions.Missed = 1 }, [3]bool{false, true, true}},
		{"a session without a due time", func(s *ServerRun) { s.Sessions.Unexpected = 1 }, [3]bool{false, true, true}},
		{"long waits for slots, said", func(s *ServerRun) { s.Sessions.WaitedDelay.Max = time.Minute }, [3]bool{true, true, true}},
		{"a start long after a slot's release", func(s *ServerRun) { s.Sessions.Handoff.Max = 2*time.Second + time.Millisecond }, [3]bool{false, true, true}},
		{"no session at all", func(s *ServerRun) { s.Sessions = ServerSessions{} }, [3]bool{false, true, true}},
		{"the server at 256 MiB", func(s *ServerRun) { s.Memory.Peak = 256 << 20 }, [3]bool{true, false, true}},
		{"the tree over 256 MiB does not count", func(s *ServerRun) { s.Memory.TreeRSS = 1 << 30 }, [3]bool{true, true, true}},
		{"no memory figure", func(s *ServerRun) { s.Memory.Peak = 0 }, [3]bool{true, false, true}},
		{"p99 at 50 ms while sessions ran", func(s *ServerRun) { s.API.Busy.P99 = 50 * time.Millisecond }, [3]bool{true, true, false}},
		{"slow while none ran does not count", func(s *ServerRun) { s.API.Idle.P99 = time.Second }, [3]bool{true, true, true}},
		{"an API error", func(s *ServerRun) { s.API.Errors, s.API.FirstError = 1, "connection refused" }, [3]bool{true, true, false}},
		{"no API answer while sessions ran", func(s *ServerRun) { s.API.Busy = Spread{} }, [3]bool{true, true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := goodServerRun()
			tc.change(s)
			goals := serverGoals(s)
			if len(goals) != 3 {
				t.Fatalf("%d goals", len(goals))
			}
			for i, g := range goals {
				if g.Pass != tc.want[i] || g.Skipped {
					t.Errorf("goal %q: pass %v skipped %v (%s), want pass %v", g.Name, g.Pass, g.Skipped, g.Measured, tc.want[i])
				}
			}
		})
	}
	for _, g := range serverGoals(&ServerRun{Error: "2 sessions failed"}) {
		if g.Pass || g.Skipped || g.Measured != "not measured" {
			t.Errorf("goal of a failed run: %+v", g)
		}
	}
	if r := (&Report{Server: &ServerRun{Error: "2 sessions failed"}}); !r.Failed() {
		t.Error("a failed server run does not fail the report")
	}
	for _, g := range serverGoals(nil) {
		if g.Pass || !g.Skipped {
			t.Errorf("goal without the run: %+v, want skipped", g)
		}
	}
}

func TestWriteServer(t *testing.T) {
	r := &Report{Server: goodServerRun()}
	r.Server.Failures = []string{"s007: the target is gone"}
	var b strings.Builder
	r.writeServer(&b)
	for _, want := range []string{"100 jobs × 10 VMs", "4.0 MiB disks", "--max-sessions 4", "200 started (200 expected)",
		"p50 2.0 ms, p99 30.0 ms, max 2.00s (80)", "s042 due 10:07:00", "120, p50 4.00s", "255 MiB peak", "300 MiB (largest sampled sum",
		"2700 requests, 0 errors; while sessions ran p50 3.0 ms, p99 49.0 ms", "while none ran p50 1.0 ms", "all p50 2.0 ms",
		"from a slot's release to the start: p50 1.0 ms", "the server 54.0s (10% of a CPU), with its plugin processes 270.0s (50% of a CPU); the bench itself 27.0s (5% of a CPU)", "failed session: s007: the target is gone"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the text lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	(&Report{Server: &ServerRun{Jobs: 3, VMsPerJob: 1, Error: "ferry server did not listen"}}).writeServer(&b)
	if !strings.Contains(b.String(), "FAILED: ferry server did not listen") || strings.Contains(b.String(), "sessions:") {
		t.Errorf("the text of a run that could not start:\n%s", b.String())
	}
}
