package bench

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// ProxySet is the run through two proxies (issue 12): `ferry proxy` for
// site prod and one for site dr, a job whose source and target name those
// sites, a fresh replica. Its full copy is compared with zstd | ssh and
// with the stages of its pipeline measured alone; its 1% tracked change
// with the same change behind 20 ms of added round trip.
type ProxySet struct {
	Proxies   []ProxyInfo     `json:"proxies"`
	Scenarios []ProxyScenario `json:"scenarios"`
	// Peer is `zstd -1 -T0 < disk | ssh 127.0.0.1 'zstd -d > copy'`, run
	// after the full copy on the same disk; nil when PeerSkipped says why.
	Peer        *PeerRun `json:"peer,omitempty"`
	PeerSkipped string   `json:"peer_skipped,omitempty"`
	// PeerSSHD says which sshd the peer's ssh reached: the machine's, or
	// the bench's own and its port (sshpeer.go). PeerCipher is the cipher
	// ssh negotiated for the data (client to server) and PeerServer the
	// far side's version, both from ssh -v.
	PeerSSHD   string `json:"peer_sshd,omitempty"`
	PeerCipher string `json:"peer_cipher,omitempty"`
	PeerServer string `json:"peer_server,omitempty"`
	// Stages are the full copy's stages measured alone, on the same disk:
	// compression (zstd -1 -T0), TLS over loopback, the disk write.
	Stages []StageRun `json:"stages"`
	Error  string     `json:"error,omitempty"` // the set could not start
}

// ProxyInfo is one proxy the bench started.
type ProxyInfo struct {
	Name    string `json:"name"`
	Site    string `json:"site"`
	Address string `json:"address"`
}

// ProxyScenario is one ferry run through the proxies.
type ProxyScenario struct {
	Key     string  `json:"key"`
	Name    string  `json:"name"`
	Percent float64 `json:"changed_percent,omitempty"`
	// RTT is the round trip the relay added between the control plane and
	// the source proxy on one side and the target proxy on the other.
	RTT time.Duration `json:"added_rtt_ns,omitempty"`
	// Relayed says the target proxy was reached through the relay, with
	// RTT added or none.
	Relayed  bool   `json:"relayed,omitempty"`
	WantMode string `json:"want_mode"`
	// Throttle is the traffic rule's rate between the sites, in bytes per
	// second; 0 for none.
	Throttle int64       `json:"throttle,omitempty"`
	Changes  *ChangeInfo `json:"changes,omitempty"`
	Ferry    *FerryRun   `json:"ferry,omitempty"`
	// Proxies is what each proxy used during the ferry run.
	Proxies []ProxyUsage `json:"proxy_usage,omitempty"`
	// RelayBytes is what the relay forwarded, both ways (TLS, gRPC and
	// the control plane's calls to the target proxy included).
	RelayBytes int64 `json:"relay_bytes,omitempty"`
	// Tries are the ferry times of the scenario each time it ran, in
	// order (the scenarios compared for the round trip run
	// ProxyRTTPairs times); its other figures are the first run's.
	Tries    []time.Duration `json:"tries_ns,omitempty"`
	Verified bool            `json:"verified"`
	Error    string          `json:"error,omitempty"`
}

// ProxyUsage is what one proxy used during one ferry run.
type ProxyUsage struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// Peak is the proxy process's own peak resident set (VmHWM, reset
	// before the run); TreePeak adds the peaks of the plugin processes it
	// ran: what the proxy's host held at most for it.
	Peak     int64 `json:"peak_bytes"`
	TreePeak int64 `json:"tree_peak_bytes"`
	// CPU is the proxy's user and system time during the run, with the
	// plugin processes it started and waited for.
	CPU     time.Duration `json:"cpu_ns"`
	Profile string        `json:"perf_data,omitempty"`
}

// StageRun is one stage of a copy through proxies measured alone.
type StageRun struct {
	Name    string   `json:"name"`
	Command []string `json:"command,omitempty"`
	Usage   Usage    `json:"usage"`
	// Bytes is what the stage processed: the disk for compression, the
	// bytes the proxies' data stream carried for TLS, the data written
	// for the disk write.
	Bytes   int64  `json:"bytes"`
	Output  string `json:"output,omitempty"`
	Skipped string `json:"skipped,omitempty"` // why it did not run
}

// Proxy scenario keys.
const (
	KeyProxyFull       = "proxy-full"
	KeyProxyTracked1   = "proxy-tracked-1"
	KeyProxyTracked1RT = "proxy-tracked-1-rtt"
	// KeyProxyTracked1Relay is KeyProxyTracked1 through the relay of
	// KeyProxyTracked1RT with no delay: what the round trip is compared
	// with.
	KeyProxyTracked1Relay = "proxy-tracked-1-relay"
	KeyProxyThrottled     = "proxy-throttled"
)

// The throttle scenario: a traffic rule of ProxyThrottle between the
// sites, and a change of about ProxyThrottleChange bytes, so that the data
// takes several seconds at the rule's rate (zstd shrinks it first).
const (
	ProxyThrottle       = 1_000_000 // bytes per second: the 1 MB/s
	ProxyThrottleChange = 16 << 20
	// ProxyThrottleAccuracy is how far the measured rate may be from the
	// rule's.
	ProxyThrottleAccuracy = 0.05
)

// The proxies' names, which are also their sites.
const (
	proxyProd = "prod"
	proxyDR   = "dr"
)

// ProxyRTT is the round trip the relay adds in the last scenario.
const ProxyRTT = 20 * time.Millisecond

// The goals of issue 12.
const (
	ProxyPeerSpeedup = 2.0 // the full copy at least this much faster than zstd | ssh
	ProxyStageShare  = 0.7 // and at least this share of the slowest stage's throughput
	ProxyRTTLimit    = 1.2 // 1% with ProxyRTT at most this times the time without
)

func (p *ProxySet) scenario(key string) *ProxyScenario {
	if p == nil {
		return nil
	}
	for i := range p.Scenarios {
		if p.Scenarios[i].Key == key && p.Scenarios[i].Error == "" && p.Scenarios[i].Ferry != nil {
			return &p.Scenarios[i]
		}
	}
	return nil
}

// Slowest is the stage that took longest, or why there is none to compare
// with: a stage that did not run may have been the slowest.
func (p *ProxySet) Slowest() (*StageRun, string) {
	var slow *StageRun
	for i := range p.Stages {
		s := &p.Stages[i]
		if s.Skipped != "" {
			return nil, fmt.Sprintf("%s skipped: %s", s.Name, s.Skipped)
		}
		if slow == nil || s.Usage.Wall > slow.Usage.Wall {
			slow = s
		}
	}
	if slow == nil || slow.Usage.Wall <= 0 {
		return nil, "no stage measured"
	}
	return slow, ""
}

// rttRatio is the time with the round trip over the time without: the
// median of the pairs' ratios when the pairs ran several times, with
// what it says of them.
func rttRatio(base, slowed *ProxyScenario) (float64, string) {
	if len(base.Tries) < 2 || len(base.Tries) != len(slowed.Tries) {
		v := float64(slowed.Ferry.Usage.Wall) / float64(base.Ferry.Usage.Wall)
		return v, fmt.Sprintf("%.2fx (%s vs %s)", v, secs(slowed.Ferry.Usage.Wall), secs(base.Ferry.Usage.Wall))
	}
	var ratios []float64
	var pairs []string
	for i := range base.Tries {
		if base.Tries[i] <= 0 {
			continue
		}
		r := float64(slowed.Tries[i]) / float64(base.Tries[i])
		ratios = append(ratios, r)
		pairs = append(pairs, fmt.Sprintf("%.2fx (%s vs %s)", r, secs(slowed.Tries[i]), secs(base.Tries[i])))
	}
	sorted := slices.Clone(ratios)
	slices.Sort(sorted)
	v := sorted[len(sorted)/2]
	return v, fmt.Sprintf("%.2fx, the median of %s", v, strings.Join(pairs, ", "))
}

// proxyGoals checks issue 12's goals on the set; p nil is a run without
// proxies (-proxies=false): every goal is skipped.
func proxyGoals(p *ProxySet, diskSize int64) []Goal {
	const (
		peerName  = "two proxies: full copy vs zstd -1 -T0 | ssh"
		stageName = "two proxies: full copy vs its slowest stage alone"
		rttName   = "two proxies: 1% changed, 20 ms more round trip vs none, both through the relay"
		thrName   = "two proxies: a traffic rule of 1 MB/s, the rate the data crossed at"
		memWant   = "≤ 256 MiB"
	)
	thrWant := fmt.Sprintf("within %.0f%% of the rule", 100*ProxyThrottleAccuracy)
	peerWant := fmt.Sprintf("ferry ≥ %gx faster", ProxyPeerSpeedup)
	stageWant := fmt.Sprintf("≥ %.0f%% of its throughput", 100*ProxyStageShare)
	rttWant := fmt.Sprintf("ferry time ≤ %gx", ProxyRTTLimit)
	memName := func(proxy string) string { return "peak memory of proxy " + proxy + " and its plugins" }
	memNames := []string{memName(proxyProd), memName(proxyDR)}
	if p == nil {
		var goals []Goal
		for _, g := range [][2]string{{peerName, peerWant}, {stageName, stageWant}, {rttName, rttWant}, {thrName, thrWant}, {memNames[0], memWant}, {memNames[1], memWant}} {
			goals = append(goals, Goal{Name: g[0], Want: g[1], Measured: "skipped (-proxies=false)", Skipped: true})
		}
		return goals
	}
	var goals []Goal
	notMeasured := func(name, want string) {
		goals = append(goals, Goal{Name: name, Want: want, Measured: "not measured"})
	}
	full := p.scenario(KeyProxyFull)
	switch {
	case full == nil:
		notMeasured(peerName, peerWant)
	case p.Peer == nil && p.PeerSkipped != "":
		goals = append(goals, Goal{Name: peerName, Want: peerWant, Measured: "skipped: " + p.PeerSkipped, Skipped: true})
	case p.Peer == nil || p.Peer.Usage.Wall <= 0 || full.Ferry.Usage.Wall <= 0:
		notMeasured(peerName, peerWant)
	default:
		v := float64(p.Peer.Usage.Wall) / float64(full.Ferry.Usage.Wall)
		goals = append(goals, Goal{Name: peerName, Want: peerWant, Value: v, Limit: ProxyPeerSpeedup, Pass: v >= ProxyPeerSpeedup,
			Measured: fmt.Sprintf("%.1fx (%s vs %s)", v, secs(full.Ferry.Usage.Wall), secs(p.Peer.Usage.Wall))})
	}
	slow, why := p.Slowest()
	switch {
	case full == nil || full.Ferry.Usage.Wall <= 0:
		notMeasured(stageName, stageWant)
	case slow == nil:
		goals = append(goals, Goal{Name: stageName, Want: stageWant, Measured: "skipped: " + why, Skipped: true})
	default:
		// Both move the same disk: throughputs compare as inverse times.
		v := float64(slow.Usage.Wall) / float64(full.Ferry.Usage.Wall)
		goals = append(goals, Goal{Name: stageName, Want: stageWant, Value: v, Limit: ProxyStageShare, Pass: v >= ProxyStageShare,
			Measured: fmt.Sprintf("%.0f%% (%s vs %s for %s: %s)", 100*v, rate(diskSize, full.Ferry.Usage.Wall), rate(diskSize, slow.Usage.Wall), FormatBytes(diskSize), slow.Name)})
	}
	base, slowed := p.scenario(KeyProxyTracked1Relay), p.scenario(KeyProxyTracked1RT)
	if base == nil || slowed == nil || base.Ferry.Usage.Wall <= 0 {
		notMeasured(rttName, rttWant)
	} else {
		v, measured := rttRatio(base, slowed)
		goals = append(goals, Goal{Name: rttName, Want: rttWant, Value: v, Limit: ProxyRTTLimit, Pass: v <= ProxyRTTLimit, Measured: measured})
	}
	if thr := p.scenario(KeyProxyThrottled); thr == nil || thr.Throttle <= 0 || thr.Ferry.Disk <= 0 || thr.Ferry.BytesSent <= 0 {
		notMeasured(thrName, thrWant)
	} else {
		// What went over the wire in the time the disk took: the disk's
		// own steps (metadata, sync) count against the rate.
		measured := float64(thr.Ferry.BytesSent) / thr.Ferry.Disk.Seconds()
		v := measured / float64(thr.Throttle)
		goals = append(goals, Goal{Name: thrName, Want: thrWant, Value: v, Limit: 1 + ProxyThrottleAccuracy,
			Pass:     v >= 1-ProxyThrottleAccuracy && v <= 1+ProxyThrottleAccuracy,
			Measured: fmt.Sprintf("%.3f MB/s, %.1f%% of the rule (%s in %s)", measured/1e6, 100*v, FormatBytes(thr.Ferry.BytesSent), secs(thr.Ferry.Disk))})
	}
	for _, proxy := range []string{proxyProd, proxyDR} {
		name := memName(proxy)
		var peak, own int64
		var where string
		for _, s := range p.Scenarios {
			for _, u := range s.Proxies {
				if u.Name == proxy && u.TreePeak > peak {
					peak, own, where = u.TreePeak, u.Peak, s.Name
				}
			}
		}
		if peak == 0 {
			notMeasured(name, memWant)
			continue
		}
		goals = append(goals, Goal{Name: name, Want: memWant, Value: float64(peak), Limit: MemoryLimit, Pass: peak <= MemoryLimit,
			Measured: fmt.Sprintf("%s (the proxy alone %s; %s)", FormatBytes(peak), FormatBytes(own), where)})
	}
	return goals
}

// sshDetails is ", OpenSSH_x, cipher c" with what is known of both.
func sshDetails(server, cipher string) string {
	var s string
	if server != "" {
		s += ", " + server
	}
	if cipher != "" {
		s += ", cipher " + cipher
	}
	return s
}

// rate is n bytes in d as MB/s.
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MB/s", float64(n)/d.Seconds()/1e6)
}

// writeProxies writes the run through two proxies.
func (r *Report) writeProxies(b *strings.Builder) error {
	p := r.Proxies
	if p == nil {
		return nil
	}
	b.WriteString("\ntwo proxies (issue 12): ")
	for i, x := range p.Proxies {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(b, "%s (site %s) on %s", x.Name, x.Site, x.Address)
	}
	b.WriteString("; job proxied, compression zstd, a fresh replica; proxy peaks are VmHWM reset before each run, with the plugins each ran\n")
	if p.Error != "" {
		fmt.Fprintf(b, "FAILED: %s\n", p.Error)
	}
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\ttool\tmode\twall\tdisk MB/s\tcpu\tothers' cpu\tferry peak\tprod: peak (alone)\tcpu\tdr: peak (alone)\tcpu\tread\tsent\ton the relay\tverified\t")
	for _, s := range p.Scenarios {
		if f := s.Ferry; f != nil {
			cols := []string{s.Name, "ferry", f.Mode, secs(f.Usage.Wall), "", secs(f.Usage.CPU()), secs(f.Usage.OtherCPU), FormatBytes(f.Usage.PeakBound())}
			if s.Key == KeyProxyFull {
				cols[4] = rate(r.Size, f.Usage.Wall)
			}
			for _, name := range []string{proxyProd, proxyDR} {
				peak, cpu := "", ""
				for _, u := range s.Proxies {
					if u.Name == name {
						peak, cpu = fmt.Sprintf("%s (%s)", FormatBytes(u.TreePeak), FormatBytes(u.Peak)), secs(u.CPU)
					}
				}
				cols = append(cols, peak, cpu)
			}
			relay := ""
			if s.Relayed || s.RTT > 0 {
				relay = FormatBytes(s.RelayBytes)
			}
			cols = append(cols, FormatBytes(f.BytesRead), FormatBytes(f.BytesSent), relay, fmt.Sprint(s.Verified))
			fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
		}
		if s.Error != "" {
			fmt.Fprintf(tw, "%s\tFAILED\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\n", s.Name)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range p.Scenarios {
		if s.Error != "" {
			fmt.Fprintf(b, "%s FAILED: %s\n", s.Name, s.Error)
		}
	}
	fmt.Fprintf(b, "\nthe full copy's peer and stages, on the same %s disk (disk MB/s: the disk's size over the wall time):\n", FormatBytes(r.Size))
	tw = tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "tool\twall\tdisk MB/s\tcpu\tothers' cpu\tmax RSS\tbytes\toutput\t")
	if p.Peer != nil {
		u := p.Peer.Usage
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\tfsync after %s\t\n", p.Peer.Tool, secs(u.Wall), rate(r.Size, u.Wall), secs(u.CPU()), secs(u.OtherCPU), FormatBytes(u.MaxRSS), FormatBytes(p.Peer.BytesRead), secs(p.Peer.Flush))
	}
	// Skipped ones below the table: their reasons are long.
	var skipped []string
	if p.Peer == nil && p.PeerSkipped != "" {
		skipped = append(skipped, "zstd -1 -T0 | ssh skipped: "+p.PeerSkipped)
	}
	for _, s := range p.Stages {
		if s.Skipped != "" {
			skipped = append(skipped, s.Name+" skipped: "+s.Skipped)
			continue
		}
		u := s.Usage
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.Name, secs(u.Wall), rate(r.Size, u.Wall), secs(u.CPU()), secs(u.OtherCPU), FormatBytes(u.MaxRSS), FormatBytes(s.Bytes), s.Output)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, line := range skipped {
		b.WriteString(line + "\n")
	}
	if p.Peer != nil && p.PeerSSHD != "" {
		fmt.Fprintf(b, "zstd | ssh went through %s%s\n", p.PeerSSHD, sshDetails(p.PeerServer, p.PeerCipher))
	}
	if slow, why := p.Slowest(); slow != nil {
		fmt.Fprintf(b, "slowest stage: %s, %s\n", slow.Name, rate(r.Size, slow.Usage.Wall))
	} else {
		fmt.Fprintf(b, "slowest stage: unknown (%s)\n", why)
	}
	return nil
}
