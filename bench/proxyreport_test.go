package bench

import (
	"strings"
	"testing"
	"time"
)

// proxied is a scenario through the proxies whose ferry run took wall and
// whose proxies peaked at prod and dr MiB (with their plugins).
func proxied(key string, wall time.Duration, prod, dr int64) ProxyScenario {
	return ProxyScenario{Key: key, Name: key, Ferry: &FerryRun{Usage: run(wall)}, Proxies: []ProxyUsage{
		{Name: "prod", Peak: prod << 20 / 2, TreePeak: prod << 20}, {Name: "dr", Peak: dr << 20 / 2, TreePeak: dr << 20}}}
}

// throttled is the throttle scenario, which sent bytes in disk time.
func throttled(sent int64, disk time.Duration) ProxyScenario {
	return ProxyScenario{Key: KeyProxyThrottled, Name: KeyProxyThrottled, Throttle: ProxyThrottle,
		Ferry: &FerryRun{Usage: run(disk + time.Second), BytesSent: sent, Disk: disk}}
}

func stages(zstd, tls, write time.Duration) []StageRun {
	return []StageRun{{Name: "zstd -1 -T0", Usage: run(zstd)}, {Name: "tls", Usage: run(tls)}, {Name: "write", Usage: run(write)}}
}

func TestProxyGoals(t *testing.T) {
	good := func() *ProxySet {
		return &ProxySet{
			Scenarios: []ProxyScenario{
				proxied(KeyProxyFull, 4*time.Second, 100, 200),
				proxied(KeyProxyTracked1, 800*time.Millisecond, 80, 256), // 256 MiB: at the limit
				proxied(KeyProxyTracked1Relay, time.Second, 80, 100),
				proxied(KeyProxyTracked1RT, 1200*time.Millisecond, 90, 100),
				throttled(10_500_000, 10*time.Second), // 1.05 MB/s: at the limit
			},
			Peer:   &PeerRun{Usage: run(8 * time.Second)},                             // 2x: at the limit
			Stages: stages(2800*time.Millisecond, time.Second, 1500*time.Millisecond), // 70%: at the limit
		}
	}
	const (
		peer  = "two proxies: full copy vs zstd -1 -T0 | ssh"
		stage = "two proxies: full copy vs its slowest stage alone"
		rtt   = "two proxies: 1% changed, 20 ms more round trip vs none, both through the relay"
		thr   = "two proxies: a traffic rule of 1 MB/s, the rate the data crossed at"
		prod  = "peak memory of proxy prod and its plugins"
		dr    = "peak memory of proxy dr and its plugins"
	)
	type verdict struct{ pass, skipped bool }
	for _, tc := range []struct {
		name string
		edit func(p *ProxySet)
		want map[string]verdict
	}{
		{"every goal at its limit", func(*ProxySet) {}, map[string]verdict{peer: {pass: true}, stage: {pass: true}, rtt: {pass: true}, thr: {pass: true}, prod: {pass: true}, dr: {pass: true}}},
		{"a throttle too slow is as wrong as one too fast", func(p *ProxySet) {
			p.Scenarios[4] = throttled(9_400_000, 10*time.Second)
		}, map[string]verdict{peer: {pass: true}, stage: {pass: true}, rtt: {pass: true}, thr: {}, prod: {pass: true}, dr: {pass: true}}},
		{"every goal just past it", func(p *ProxySet) {
			p.Peer.Usage.Wall = 7900 * time.Millisecond
			p.Stages[0].Usage.Wall = 2700 * time.Millisecond
			p.Scenarios[3].Ferry.Usage.Wall = 1210 * time.Millisecond
			p.Scenarios[0].Proxies[0].TreePeak = MemoryLimit + 1
			p.Scenarios[1].Proxies[1].TreePeak = MemoryLimit + 1
			p.Scenarios[4] = throttled(10_600_000, 10*time.Second)
		}, map[string]verdict{peer: {}, stage: {}, rtt: {}, thr: {}, prod: {}, dr: {}}},
		{"the median pair decides the round trip", func(p *ProxySet) {
			p.Scenarios[2].Tries = []time.Duration{time.Second, 500 * time.Millisecond, time.Second}
			p.Scenarios[3].Tries = []time.Duration{2 * time.Second, 550 * time.Millisecond, 1150 * time.Millisecond} // 2x, 1.1x, 1.15x
		}, map[string]verdict{peer: {pass: true}, stage: {pass: true}, rtt: {pass: true}, thr: {pass: true}, prod: {pass: true}, dr: {pass: true}}},
		{"a median pair past the limit fails", func(p *ProxySet) {
			p.Scenarios[2].Tries = []time.Duration{time.Second, time.Second, time.Second}
			p.Scenarios[3].Tries = []time.Duration{1100 * time.Millisecond, 1250 * time.Millisecond, 1300 * time.Millisecond} // 1.1x, 1.25x, 1.3x
		}, map[string]verdict{peer: {pass: true}, stage: {pass: true}, rtt: {}, thr: {pass: true}, prod: {pass: true}, dr: {pass: true}}},
		{"no ssh, no zstd: skipped with the reason", func(p *ProxySet) {
			p.Peer, p.PeerSkipped = nil, "ssh -o BatchMode=yes 127.0.0.1 true: connection refused"
			p.Stages[0] = StageRun{Name: "zstd -1 -T0", Skipped: "no zstd"}
		}, map[string]verdict{peer: {skipped: true}, stage: {skipped: true}, rtt: {pass: true}, thr: {pass: true}, prod: {pass: true}, dr: {pass: true}}},
		{"failed scenarios are not measured, not skipped", func(p *ProxySet) {
			p.Scenarios[0].Error = "boom"
			p.Scenarios[3] = ProxyScenario{Key: KeyProxyTracked1RT, Error: "boom"}
			p.Scenarios[4].Error = "boom"
		}, map[string]verdict{peer: {}, stage: {}, rtt: {}, thr: {}, prod: {pass: true}, dr: {pass: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := good()
			tc.edit(p)
			goals := proxyGoals(p, 4<<30)
			if len(goals) != len(tc.want) {
				t.Fatalf("%d goals, want %d: %+v", len(goals), len(tc.want), goals)
			}
			for _, g := range goals {
				w, ok := tc.want[g.Name]
				if !ok || g.Pass != w.pass || g.Skipped != w.skipped {
					t.Errorf("goal %q: pass %v skipped %v (%s), want %+v", g.Name, g.Pass, g.Skipped, g.Measured, w)
				}
				if w.skipped && !strings.HasPrefix(g.Measured, "skipped: ") {
					t.Errorf("goal %q skipped without its reason: %q", g.Name, g.Measured)
				}
			}
		})
	}
	// The stage goal names the slowest stage and both throughputs.
	goals := proxyGoals(good(), 4<<30)
	if m := goals[1].Measured; !strings.Contains(m, "zstd -1 -T0") || !strings.Contains(m, "1074 MB/s") || !strings.Contains(m, "1534 MB/s") {
		t.Errorf("stage goal: %q", m)
	}
	p := good()
	p.Scenarios[2].Tries = []time.Duration{time.Second, 500 * time.Millisecond, time.Second}
	p.Scenarios[3].Tries = []time.Duration{2 * time.Second, 550 * time.Millisecond, 1150 * time.Millisecond}
	if m := proxyGoals(p, 4<<30)[2].Measured; m != "1.15x, the median of 2.00x (2.00s vs 1.00s), 1.10x (0.55s vs 0.50s), 1.15x (1.15s vs 1.00s)" {
		t.Errorf("round trip goal of three pairs: %q", m)
	}
	if m := goals[3].Measured; m != "1.050 MB/s, 105.0% of the rule (10.0 MiB in 10.0s)" {
		t.Errorf("throttle goal: %q", m)
	}
	if m := goals[4].Measured; !strings.Contains(m, "100 MiB") || !strings.Contains(m, "the proxy alone 50.0 MiB") {
		t.Errorf("prod's memory goal: %q", m)
	}
}

func TestProxySlowest(t *testing.T) {
	p := &ProxySet{Stages: stages(time.Second, 3*time.Second, 2*time.Second)}
	if s, why := p.Slowest(); s == nil || s.Name != "tls" {
		t.Errorf("slowest: %+v (%s), want tls", s, why)
	}
	p.Stages[2].Skipped = "no space"
	if s, why := p.Slowest(); s != nil || !strings.Contains(why, "write skipped: no space") {
		t.Errorf("slowest with a stage skipped: %+v, %q", s, why)
	}
	if s, why := (&ProxySet{}).Slowest(); s != nil || why == "" {
		t.Errorf("slowest of no stage: %+v, %q", s, why)
	}
}

func TestWriteProxies(t *testing.T) {
	p := &ProxySet{
		Proxies:   []ProxyInfo{{Name: "prod", Site: "prod", Address: "127.0.0.2:1"}, {Name: "dr", Site: "dr", Address: "127.0.0.3:2"}},
		Scenarios: []ProxyScenario{proxied(KeyProxyFull, 4*time.Second, 100, 200), {Key: KeyProxyTracked1, Name: "2. 1% changed", Error: "boom"}},
		Stages:    stages(time.Second, 2*time.Second, 3*time.Second), PeerSkipped: "no sshd",
	}
	p.Stages[0] = StageRun{Name: "zstd -1 -T0", Skipped: "no zstd"}
	r := &Report{Size: 4 << 30, DirectSkipped: true, Proxies: p}
	r.Goals = EvaluateGoals(r)
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"skipped (-direct=false)", "prod (site prod) on 127.0.0.2:1", "1074 MB/s", "200 MiB (100 MiB)",
		"2. 1% changed FAILED: boom", "zstd -1 -T0 | ssh skipped: no sshd", "zstd -1 -T0 skipped: no zstd", "slowest stage: unknown", "SKIP  two proxies: full copy vs zstd"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the text lacks %q:\n%s", want, b.String())
		}
	}
}

func TestWriteProxiesPeerRoute(t *testing.T) {
	p := &ProxySet{
		Scenarios: []ProxyScenario{proxied(KeyProxyFull, 4*time.Second, 100, 200)},
		Stages:    stages(time.Second, 2*time.Second, 3*time.Second),
		Peer:      &PeerRun{Tool: "zstd -1 -T0 | ssh 127.0.0.1 'zstd -d'", Usage: run(10 * time.Second)},
		PeerSSHD:  "the bench's own sshd (/usr/sbin/sshd, as root) on 127.0.0.1:40222", PeerServer: "OpenSSH_9.2p1", PeerCipher: "chacha20-poly1305@openssh.com",
	}
	r := &Report{Size: 4 << 30, DirectSkipped: true, Proxies: p}
	r.Goals = EvaluateGoals(r)
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"zstd | ssh went through the bench's own sshd (/usr/sbin/sshd, as root) on 127.0.0.1:40222, OpenSSH_9.2p1, cipher chacha20-poly1305@openssh.com",
		"PASS  two proxies: full copy vs zstd -1 -T0 | ssh", "2.5x (4.00s vs 10.0s)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the text lacks %q:\n%s", want, b.String())
		}
	}
}
