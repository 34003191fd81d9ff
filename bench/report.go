package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of one benchmark run; it is also the -json output.
type Report struct {
	Started  time.Time `json:"started"`
	Duration float64   `json:"duration_s"`
	Machine  Machine   `json:"machine"`
	Command  string    `json:"command"`
	Size     int64     `json:"disk_bytes"`
	Seed     uint64    `json:"seed"`
	// Cache is "cold" when the page cache was dropped before every timed
	// run, "warm" when the inputs and outputs were read into it instead,
	// "none" when nothing ran on a generated disk.
	Cache     string `json:"cache"`
	CacheNote string `json:"cache_note,omitempty"`
	// RSSFloor is the max RSS a tool that holds nothing reports (true run
	// the way every tool is run): the floor of every MaxRSS figure.
	RSSFloor int64 `json:"rss_floor_bytes"`
	// Profiled says ferry ran under perf record, which slows it.
	Profiled  bool       `json:"profiled,omitempty"`
	Image     ImageInfo  `json:"image"`
	Scenarios []Scenario `json:"scenarios"`
	// Big is the big sparse disk's run, for memory; nil when skipped.
	Big *BigRun `json:"big,omitempty"`
	// Proxies is the run through two proxies (issue 12); nil when skipped.
	Proxies *ProxySet `json:"proxies,omitempty"`
	// VHDX is the VHDX library against a raw file (issue 14); nil when
	// skipped.
	VHDX *VHDXRun `json:"vhdx,omitempty"`
	// Served is the change scenarios again through ferry server (issue
	// 11: scheduled incrementals); nil when skipped.
	Served *ServedRun `json:"served,omitempty"`
	// Server is `ferry server` at scale (issue 13); nil when skipped.
	Server *ServerRun `json:"server,omitempty"`
	// DirectSkipped marks a run without the direct scenarios
	// (-direct=false): their goals are skipped, not failed.
	DirectSkipped bool   `json:"direct_skipped,omitempty"`
	Goals         []Goal `json:"goals"`
	Scratch       string `json:"scratch_dir,omitempty"` // kept with -keep
}

// BigRun is ferry (the plain job) replicating a big sparse disk: the
// scenarios are the same as on the thick disk, their memory is compared.
type BigRun struct {
	Size int64 `json:"disk_bytes"`
	// DataBytes is what the disk held before the changes: one 1 MiB chunk
	// of the image in every Stride, the rest holes.
	DataBytes int64      `json:"data_bytes"`
	Stride    int64      `json:"stride"`
	Scenarios []Scenario `json:"scenarios"`
	Error     string     `json:"error,omitempty"` // the run could not start
	Scratch   string     `json:"scratch_dir,omitempty"`
}

// Machine is where the run happened.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model,omitempty"`
	Memory   int64  `json:"memory_bytes"`
	Kernel   string `json:"kernel,omitempty"`
	// Nice is the harness's nice value, which every tool inherits: a
	// negative one keeps other work on a shared machine from skewing the
	// figures.
	Nice  int    `json:"nice"`
	Go    string `json:"go"`
	Rsync string `json:"rsync,omitempty"`
	Cp    string `json:"cp,omitempty"`
}

// ImageInfo describes the generated disk.
type ImageInfo struct {
	Composition
	// TextZstdRatio is how well the compressible part compresses with zstd
	// at its fastest (one stream over its first 64 MiB).
	TextZstdRatio float64 `json:"text_zstd_ratio"`
	WriteSeconds  float64 `json:"write_s"`
}

// Scenario is one step of the run: a change (or none), ferry's runs and the
// peer's run on the same data.
type Scenario struct {
	Key     string  `json:"key"`
	Name    string  `json:"name"`
	Percent float64 `json:"changed_percent,omitempty"`
	Tracked bool    `json:"tracked"` // the change went through change tracking
	// WantMode is the mode ferry must report for the scenario to count.
	WantMode  string      `json:"want_mode"`
	Changes   *ChangeInfo `json:"changes,omitempty"`
	Ferry     *FerryRun   `json:"ferry,omitempty"`      // compression none
	FerryZstd *FerryRun   `json:"ferry_zstd,omitempty"` // compression zstd
	Peer      *PeerRun    `json:"peer,omitempty"`
	// The floors: HashFloor in the digest scenarios, CopyFloor in every
	// scenario with changes (its copy follows the source).
	HashFloor *FloorRun `json:"hash_floor,omitempty"`
	CopyFloor *FloorRun `json:"copy_floor,omitempty"`
	Verified  bool      `json:"verified"` // replicas and the copies equal the source
	// Tries is, for a scenario run several times (the short ones through
	// ferry server), each try's session over its floor, in the order
	// run; the scenario's figures are those of the median try.
	Tries []float64 `json:"tries,omitempty"`
	Error string    `json:"error,omitempty"`
}

// ChangeInfo is what a scenario changed.
type ChangeInfo struct {
	Writes       int     `json:"writes"`
	Bytes        int64   `json:"bytes"`         // the bytes really changed (union of the writes)
	WrittenBytes int64   `json:"written_bytes"` // the sum of the writes
	ZstdBytes    int64   `json:"zstd_bytes"`    // Bytes compressed as one zstd stream, SpeedFastest
	ApplySeconds float64 `json:"apply_s"`
}

// FerryRun is one `ferry run --json` and what its session reported.
type FerryRun struct {
	Job           string `json:"job"`
	Compression   string `json:"compression"`
	Usage         Usage  `json:"usage"`
	Mode          string `json:"mode"`
	Lane          string `json:"lane"`
	BytesRead     int64  `json:"bytes_read"`
	BytesSent     int64  `json:"bytes_sent"`
	BytesWritten  int64  `json:"bytes_written"`
	BlocksChanged int64  `json:"blocks_changed"`
	BlocksTotal   int64  `json:"blocks_total"`
	// Phases from the session: Session is from its start to its end, Disk
	// the disk's data movement within it; the rest of Usage.Wall is
	// starting ferry and the plugins, loading the configuration and
	// opening the catalog, and stopping.
	Session      time.Duration `json:"session_ns"`
	Disk         time.Duration `json:"disk_ns"`
	RestorePoint string        `json:"restore_point"`
	Profile      string        `json:"perf_data,omitempty"`
	// Log is what ferry printed on standard error, without percentages.
	Log []string `json:"log,omitempty"`
}

// PeerRun is one run of the peer tool.
type PeerRun struct {
	Tool    string   `json:"tool"`
	Command []string `json:"command"`
	Usage   Usage    `json:"usage"`
	// BytesRead is what the tool reads by design: cp the source once,
	// rsync the source and the previous copy in full.
	BytesRead int64 `json:"bytes_read"`
	// BytesSent is cp's file size, or rsync's "Total bytes sent".
	BytesSent int64 `json:"bytes_sent"`
	Literal   int64 `json:"literal_bytes,omitempty"` // rsync's "Literal data"
	// Flush is how long an fsync of the copy took right after the tool
	// ended. ferry syncs its replica within its own time; cp and rsync do
	// not, so this is what they would add to be as durable.
	Flush time.Duration `json:"flush_ns"`
}

// FloorRun is one run of a floor program (floor.go).
type FloorRun struct {
	Name         string   `json:"name"`
	Command      []string `json:"command"`
	Usage        Usage    `json:"usage"`
	BytesRead    int64    `json:"bytes_read"`
	BytesWritten int64    `json:"bytes_written"`
	Output       string   `json:"output"` // what it computed, so the work was done
}

// Floor is the floor ferry's run is compared with: the copy floor for a
// tracked change, the hash floor for a change found by digests, none for
// the full copy.
func (s *Scenario) Floor() *FloorRun {
	switch {
	case s.Changes == nil && s.Percent == 0:
		return nil
	case s.Tracked:
		return s.CopyFloor
	}
	return s.HashFloor
}

// OverFloor is ferry's wall time over its floor's.
func (s *Scenario) OverFloor() (float64, bool) {
	f := s.Floor()
	if s.Ferry == nil || f == nil || f.Usage.Wall <= 0 {
		return 0, false
	}
	return float64(s.Ferry.Usage.Wall) / float64(f.Usage.Wall), true
}

// SessionOverFloor is the time of ferry's session (without starting and
// stopping ferry and its plugins) over its floor's.
func (s *Scenario) SessionOverFloor() (float64, bool) {
	f := s.Floor()
	if s.Ferry == nil || s.Ferry.Session <= 0 || f == nil || f.Usage.Wall <= 0 {
		return 0, false
	}
	return float64(s.Ferry.Session) / float64(f.Usage.Wall), true
}

// Ratio is ferry's wall time over the peer's (below 1: ferry is faster).
func (s *Scenario) Ratio() (float64, bool) {
	if s.Ferry == nil || s.Peer == nil || s.Peer.Usage.Wall <= 0 {
		return 0, false
	}
	return float64(s.Ferry.Usage.Wall) / float64(s.Peer.Usage.Wall), true
}

// Speedup is the peer's wall time over ferry's.
func (s *Scenario) Speedup() (float64, bool) {
	r, ok := s.Ratio()
	if !ok || r == 0 {
		return 0, false
	}
	return 1 / r, true
}

// SentOverChanged is ferry's bytes sent with zstd over the changed bytes
// compressed with zstd.
func (s *Scenario) SentOverChanged() (float64, bool) {
	if s.FerryZstd == nil || s.Changes == nil || s.Changes.ZstdBytes == 0 {
		return 0, false
	}
	return float64(s.FerryZstd.BytesSent) / float64(s.Changes.ZstdBytes), true
}

func (r *Report) scenario(key string) *Scenario { return findScenario(r.Scenarios, key) }

// scenario is the served scenario of key that ran, or nil.
func (r *ServedRun) scenario(key string) *Scenario {
	if r == nil {
		return nil
	}
	return findScenario(r.Scenarios, key)
}

// findScenario is the scenario of key that ran, or nil.
func findScenario(ss []Scenario, key string) *Scenario {
	for i := range ss {
		if ss[i].Key == key && ss[i].Error == "" {
			return &ss[i]
		}
	}
	return nil
}

// Scenario keys.
const (
	KeyFull      = "full"
	KeyTracked01 = "tracked-0.1"
	KeyTracked1  = "tracked-1"
	KeyTracked10 = "tracked-10"
	KeyDigest01  = "digest-0.1"
	KeyDigest1   = "digest-1"
	KeyDigest10  = "digest-10"
)

// Goal is one of DESIGN.md's performance goals, checked on ratios measured
// in the same run.
type Goal struct {
	Name     string  `json:"name"`
	Want     string  `json:"want"`
	Measured string  `json:"measured"`
	Value    float64 `json:"value"`
	Limit    float64 `json:"limit"`
	Pass     bool    `json:"pass"`
	// Skipped is a goal whose run was not asked for (-big=false): neither
	// passed nor failed.
	Skipped bool `json:"skipped,omitempty"`
}

// MemoryLimit is the most ferry and its plugins may hold at once.
const MemoryLimit = 256 << 20

// The limits of ferry's time over its floor's (issue 11): a tracked run
// pays for its snapshot, catalog and restore point on top of the copy; a
// digest run must hash the disk and little else.
const (
	TrackedFloorLimit = 2.5
	DigestFloorLimit  = 1.2
)

// floorGoals are issue 11's goals: ferry's time against its floor's.
var floorGoals = []struct {
	key, name, floor string
	limit            float64
}{
	{KeyTracked01, "0.1% changed, change tracking vs its floor", "copy", TrackedFloorLimit},
	{KeyTracked1, "1% changed, change tracking vs its floor", "copy", TrackedFloorLimit},
	{KeyTracked10, "10% changed, change tracking vs its floor", "copy", TrackedFloorLimit},
	{KeyDigest01, "0.1% changed, digests vs its floor", "hash", DigestFloorLimit},
	{KeyDigest1, "1% changed, digests vs its floor", "hash", DigestFloorLimit},
	{KeyDigest10, "10% changed, digests vs its floor", "hash", DigestFloorLimit},
}

// EvaluateGoals checks the goals on a report. A goal whose scenario is
// missing or failed fails, saying so.
func EvaluateGoals(r *Report) []Goal {
	var goals []Goal
	notMeasured := func(name, want string) {
		if r.DirectSkipped {
			goals = append(goals, Goal{Name: name, Want: want, Measured: "skipped (-direct=false)", Skipped: true})
			return
		}
		goals = append(goals, Goal{Name: name, Want: want, Measured: "not measured"})
	}
	atMost := func(name, want string, v, limit float64, measured string) {
		goals = append(goals, Goal{Name: name, Want: want, Measured: measured, Value: v, Limit: limit, Pass: v <= limit})
	}
	atLeast := func(name, want string, v, limit float64, measured string) {
		goals = append(goals, Goal{Name: name, Want: want, Measured: measured, Value: v, Limit: limit, Pass: v >= limit})
	}

	const fullName, fullWant = "full copy vs cp --sparse=always", "ferry time ≤ 2x cp's"
	if s := r.scenario(KeyFull); s != nil {
		v, _ := s.Ratio()
		atMost(fullName, fullWant, v, 2, fmt.Sprintf("%.2fx (%s vs %s)", v, secs(s.Ferry.Usage.Wall), secs(s.Peer.Usage.Wall)))
	} else {
		notMeasured(fullName, fullWant)
	}
	for _, g := range []struct {
		key, name string
		limit     float64
	}{
		{KeyDigest1, "1% changed, digests (no change tracking) vs rsync", 6},
		{KeyTracked1, "1% changed, change tracking vs rsync", 20},
	} {
		want := fmt.Sprintf("ferry ≥ %gx faster", g.limit)
		if s := r.scenario(g.key); s != nil {
			v, _ := s.Speedup()
			atLeast(g.name, want, v, g.limit, fmt.Sprintf("%.1fx (%s vs %s)", v, secs(s.Ferry.Usage.Wall), secs(s.Peer.Usage.Wall)))
		} else {
			notMeasured(g.name, want)
		}
	}
	for _, g := range []struct{ key, name string }{
		{KeyTracked1, "1% changed, change tracking: bytes sent (zstd)"},
		{KeyDigest1, "1% changed, digests: bytes sent (zstd)"},
	} {
		const want = "≤ 1.5x the changed bytes compressed"
		if s := r.scenario(g.key); s != nil && s.FerryZstd != nil {
			v, _ := s.SentOverChanged()
			atMost(g.name, want, v, 1.5, fmt.Sprintf("%.2fx (%s sent, %s changed, %s compressed)",
				v, FormatBytes(s.FerryZstd.BytesSent), FormatBytes(s.Changes.Bytes), FormatBytes(s.Changes.ZstdBytes)))
		} else {
			notMeasured(g.name, want)
		}
	}
	for _, g := range floorGoals {
		want := fmt.Sprintf("ferry time ≤ %gx the %s floor's", g.limit, g.floor)
		if s := r.scenario(g.key); s != nil && s.Floor() != nil {
			v, _ := s.OverFloor()
			atMost(g.name, want, v, g.limit, fmt.Sprintf("%.2fx (%s vs %s)", v, secs(s.Ferry.Usage.Wall), secs(s.Floor().Usage.Wall)))
		} else {
			notMeasured(g.name, want)
		}
	}
	for _, g := range floorGoals {
		name, want := "in ferry server: "+g.name, fmt.Sprintf("session ≤ %gx the %s floor's time", g.limit, g.floor)
		switch s := r.Served.scenario(g.key); {
		case r.Served == nil:
			goals = append(goals, Goal{Name: name, Want: want, Measured: "skipped (-served=false or -direct=false)", Skipped: true})
		case s != nil && s.Floor() != nil:
			v, _ := s.SessionOverFloor()
			atMost(name, want, v, g.limit, fmt.Sprintf("%.2fx (%s vs %s)", v, secs(s.Ferry.Session), secs(s.Floor().Usage.Wall)))
		default:
			goals = append(goals, Goal{Name: name, Want: want, Measured: "not measured"})
		}
	}
	const memWant = "≤ 256 MiB"
	memory := func(name string, scs []Scenario) {
		if peak, where := peakMemory(scs); peak > 0 {
			goals = append(goals, Goal{Name: name, Want: memWant, Value: float64(peak), Limit: MemoryLimit, Pass: peak <= MemoryLimit,
				Measured: fmt.Sprintf("%s (%s)", FormatBytes(peak), where)})
		} else {
			notMeasured(name, memWant)
		}
	}
	memory(fmt.Sprintf("peak memory of ferry and its plugins, %s disk", FormatBytes(r.Size)), r.Scenarios)
	if big := r.Big; big == nil {
		goals = append(goals, Goal{Name: "peak memory of ferry and its plugins, big sparse disk", Want: memWant, Measured: "skipped (-big=false)", Skipped: true})
	} else {
		memory(fmt.Sprintf("peak memory of ferry and its plugins, %s sparse disk", FormatBytes(big.Size)), big.Scenarios)
	}
	goals = append(goals, vhdxGoals(r.VHDX)...)
	goals = append(goals, proxyGoals(r.Proxies, r.Size)...)
	return append(goals, serverGoals(r.Server)...)
}

// peakMemory is the largest tree peak of ferry's runs in the scenarios,
// and where it was.
func peakMemory(ss []Scenario) (int64, string) {
	var peak int64
	var where string
	for _, s := range ss {
		for _, f := range []*FerryRun{s.Ferry, s.FerryZstd} {
			if f != nil && f.Usage.PeakBound() > peak {
				peak, where = f.Usage.PeakBound(), fmt.Sprintf("%s, %s", s.Name, f.Compression)
			}
		}
	}
	return peak, where
}

// Passed reports whether every goal passed.
func (r *Report) Passed() bool {
	for _, g := range r.Goals {
		if !g.Pass && !g.Skipped {
			return false
		}
	}
	return true
}

// Failed reports whether a scenario failed to run as intended.
func (r *Report) Failed() bool {
	ss := r.Scenarios
	if r.Big != nil {
		if r.Big.Error != "" {
			return true
		}
		ss = append(ss[:len(ss):len(ss)], r.Big.Scenarios...)
	}
	for _, s := range ss {
		if s.Error != "" {
			return true
		}
	}
	if v := r.VHDX; v != nil && v.Error != "" {
		return true
	}
	if s := r.Server; s != nil && s.Error != "" {
		return true
	}
	if s := r.Served; s != nil {
		if s.Error != "" {
			return true
		}
		for _, sc := range s.Scenarios {
			if sc.Error != "" {
				return true
			}
		}
	}
	if p := r.Proxies; p != nil {
		if p.Error != "" {
			return true
		}
		for _, s := range p.Scenarios {
			if s.Error != "" {
				return true
			}
		}
	}
	return false
}

// WriteText writes the report as tables for a person.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	if r.Cache == "none" {
		fmt.Fprintf(&b, "ferry-bench: seed %d, nothing on a generated disk", r.Seed)
	} else {
		fmt.Fprintf(&b, "ferry-bench: %s disk, seed %d, %s cache", FormatBytes(r.Size), r.Seed, r.Cache)
	}
	if r.CacheNote != "" {
		fmt.Fprintf(&b, " (%s)", r.CacheNote)
	}
	fmt.Fprintf(&b, "\nmachine: %d CPUs (%s), %s memory, Linux %s, %s, nice %d; %s\n",
		r.Machine.CPUs, r.Machine.CPUModel, FormatBytes(r.Machine.Memory), r.Machine.Kernel, r.Machine.Go, r.Machine.Nice, r.Started.Format(time.RFC3339))
	if r.Cache != "none" {
		fmt.Fprintf(&b, "image: %.1f%% zeros, %.1f%% text (zstd %.2fx), %.1f%% random, written in %.1fs\n",
			100*r.Image.Share(Zero), 100*r.Image.Share(Text), r.Image.TextZstdRatio, 100*r.Image.Share(Random), r.Image.WriteSeconds)
	}
	if r.RSSFloor > 0 {
		fmt.Fprintf(&b, "memory: max RSS is the largest process of the tool's tree (ru_maxrss; %s for a tool that holds nothing); tree peak bounds the whole tree (the sum of each process's VmHWM)\n", FormatBytes(r.RSSFloor))
		b.WriteString("others' cpu: CPU time the rest of the machine used while the tool ran (from /proc/stat): noise in the figures\n")
	}
	if busy := r.busiest(); busy > 0.10 {
		fmt.Fprintf(&b, "warning: other processes used up to %.0f%% of the machine's CPU time during a timed run; the figures are noisy\n", 100*busy)
	}
	if r.Profiled {
		b.WriteString("ferry ran under perf record: its times include the profiler's cost\n")
	}
	b.WriteString("\n")
	if r.DirectSkipped {
		b.WriteString("direct scenarios (ferry without proxies, cp, rsync, their floors): skipped (-direct=false)\n")
	} else if err := r.writeDirect(&b); err != nil {
		return err
	}
	if err := r.writeServed(&b); err != nil {
		return err
	}
	if err := r.writeBig(&b); err != nil {
		return err
	}
	r.writeVHDX(&b)
	if err := r.writeProxies(&b); err != nil {
		return err
	}
	r.writeServer(&b)

	b.WriteString("\ngoals:\n")
	if r.Profiled {
		b.WriteString("  (ferry ran under perf record: its times and memory include perf's, so these are not the real verdicts)\n")
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, g := range r.Goals {
		res := "FAIL"
		switch {
		case g.Skipped:
			res = "SKIP"
		case g.Pass:
			res = "PASS"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", res, g.Name, g.Want, g.Measured)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeDirect writes the direct scenarios: ferry without proxies, its
// peers and floors.
func (r *Report) writeDirect(b *strings.Builder) error {
	b.WriteString("ferry/peer and speedup compare with cp or rsync; ferry/floor compares ferry with its floor: the copy floor (read the changed extents, write them into a copy, one fsync) for change tracking, the hash floor (read the whole disk, xxh3-128 of every 4 KiB block on all cores) for digests\n\n")
	if err := writeRuns(b, r.Scenarios); err != nil {
		return err
	}
	b.WriteString("\nchanges and where ferry's time goes:\n")
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\twrites\tchanged\tzstd of changed\tsent zstd/changed zstd\tferry: start+stop\tsession\tdisk\tstorage read/written\tpeer: storage read/written\tfsync after\tverified\t")
	for _, s := range r.Scenarios {
		writes, changed, zstd, over := "", "", "", ""
		if c := s.Changes; c != nil {
			writes, changed, zstd = fmt.Sprint(c.Writes), FormatBytes(c.Bytes), FormatBytes(c.ZstdBytes)
			if v, ok := s.SentOverChanged(); ok {
				over = fmt.Sprintf("%.2fx", v)
			}
		}
		var overhead, session, disk, io, peerIO, flush string
		if f := s.Ferry; f != nil {
			overhead, session, disk = secs(f.Usage.Wall-f.Session), secs(f.Session), secs(f.Disk)
			io = FormatBytes(f.Usage.DiskRead) + " / " + FormatBytes(f.Usage.DiskWrite)
		}
		if p := s.Peer; p != nil {
			peerIO = FormatBytes(p.Usage.DiskRead) + " / " + FormatBytes(p.Usage.DiskWrite)
			flush = secs(p.Flush)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%v\t\n", s.Name, writes, changed, zstd, over, overhead, session, disk, io, peerIO, flush, s.Verified)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range r.Scenarios {
		if s.Error != "" {
			fmt.Fprintf(b, "\n%s FAILED: %s\n", s.Name, s.Error)
		}
	}
	return nil
}

// writeServed writes the change scenarios run through ferry server.
func (r *Report) writeServed(b *strings.Builder) error {
	sr := r.Served
	if sr == nil {
		return nil
	}
	b.WriteString("\nthrough ferry server (scheduled incrementals: its plugins and catalog stay open between sessions; session is the server's record of it, client the wall time of the ferry run that asked and followed it):\n")
	if sr.Error != "" {
		fmt.Fprintf(b, "FAILED: %s\n", sr.Error)
		if sr.Log != "" {
			fmt.Fprintf(b, "its log:\n%s\n", sr.Log)
		}
	}
	if w := sr.WarmUp; w != nil {
		fmt.Fprintf(b, "first session (no change; starts the plugins): %s, session %s\n", w.Mode, secs(w.Session))
	}
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmode\tsession\tdisk\tclient\tread\tsent\tfloor\tsession/floor\tverified\t")
	for _, s := range sr.Scenarios {
		f := s.Ferry
		if f == nil {
			fmt.Fprintf(tw, "%s\tFAILED\t\t\t\t\t\t\t\t\t\n", s.Name)
			continue
		}
		floor, over := "", ""
		if fl := s.Floor(); fl != nil {
			floor = fl.Name + " " + secs(fl.Usage.Wall)
		}
		if v, ok := s.SessionOverFloor(); ok {
			over = fmt.Sprintf("%.2fx", v)
		}
		if len(s.Tries) > 1 {
			var tries []string
			for _, v := range s.Tries {
				tries = append(tries, fmt.Sprintf("%.2fx", v))
			}
			over += " (median of " + strings.Join(tries, ", ") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%v\t\n", s.Name, f.Mode, secs(f.Session), secs(f.Disk), secs(f.Usage.Wall),
			FormatBytes(f.BytesRead), FormatBytes(f.BytesSent), floor, over, s.Verified)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range sr.Scenarios {
		if s.Error != "" {
			fmt.Fprintf(b, "\n%s FAILED: %s\n", s.Name, s.Error)
		}
	}
	return nil
}

// writeRuns writes the table of every tool's run in the scenarios.
func writeRuns(b *strings.Builder, ss []Scenario) error {
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\ttool\tmode\twall\tcpu\tothers' cpu\tmax RSS\ttree peak\tread\tsent\tferry/peer\tspeedup\tferry/floor\t")
	for _, s := range ss {
		name := s.Name
		row := func(tool, mode string, u Usage, read, sent int64, extra string) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, tool, mode, secs(u.Wall), secs(u.CPU()), secs(u.OtherCPU),
				FormatBytes(u.MaxRSS), FormatBytes(u.PeakBound()), FormatBytes(read), FormatBytes(sent), extra)
			name = ""
		}
		// ratios is the three last columns for a ferry run of wall w.
		ratios := func(w time.Duration) string {
			peer, floor := "\t", ""
			if s.Peer != nil && s.Peer.Usage.Wall > 0 {
				v := float64(w) / float64(s.Peer.Usage.Wall)
				peer = fmt.Sprintf("%.2fx\t%.1fx", v, 1/v)
			}
			if f := s.Floor(); f != nil && f.Usage.Wall > 0 {
				floor = fmt.Sprintf("%.2fx", float64(w)/float64(f.Usage.Wall))
			}
			return peer + "\t" + floor + "\t"
		}
		if f := s.Ferry; f != nil {
			row("ferry", f.Mode, f.Usage, f.BytesRead, f.BytesSent, ratios(f.Usage.Wall))
		}
		if f := s.FerryZstd; f != nil {
			row("ferry zstd", f.Mode, f.Usage, f.BytesRead, f.BytesSent, ratios(f.Usage.Wall))
		}
		for _, f := range []*FloorRun{s.HashFloor, s.CopyFloor} {
			if f != nil {
				row(f.Name, "", f.Usage, f.BytesRead, f.BytesWritten, "\t\t\t")
			}
		}
		if p := s.Peer; p != nil {
			row(p.Tool, "", p.Usage, p.BytesRead, p.BytesSent, "\t\t\t")
		}
		if s.Error != "" {
			fmt.Fprintf(tw, "%s\tFAILED\t\t\t\t\t\t\t\t\t\t\t\t\n", name)
		}
	}
	return tw.Flush()
}

// writeBig writes the big sparse disk's runs and how memory scaled.
func (r *Report) writeBig(b *strings.Builder) error {
	big := r.Big
	if big == nil {
		return nil
	}
	fmt.Fprintf(b, "\nbig sparse disk: %s, %s of data (one 1 MiB chunk of the image in %d, the rest holes), ferry with compression none only:\n",
		FormatBytes(big.Size), FormatBytes(big.DataBytes), big.Stride)
	if big.Error != "" {
		fmt.Fprintf(b, "FAILED: %s\n", big.Error)
	}
	if len(big.Scenarios) == 0 {
		return nil
	}
	if err := writeRuns(b, big.Scenarios); err != nil {
		return err
	}
	for _, s := range big.Scenarios {
		if s.Error != "" {
			fmt.Fprintf(b, "%s FAILED: %s\n", s.Name, s.Error)
		}
	}
	fmt.Fprintf(b, "\nmemory by disk size (ferry, compression none, tree peak):\n")
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\t%s\t%s\tratio\twall %s\twall %s\t\n", FormatBytes(r.Size), FormatBytes(big.Size), FormatBytes(r.Size), FormatBytes(big.Size))
	for _, bs := range big.Scenarios {
		if bs.Ferry == nil || bs.Error != "" {
			continue
		}
		name := strings.SplitN(bs.Name, ". ", 2)
		small, ratio, wall := "", "", ""
		if s := r.scenario(bs.Key); s != nil && s.Ferry != nil {
			small, wall = FormatBytes(s.Ferry.Usage.PeakBound()), secs(s.Ferry.Usage.Wall)
			if p := s.Ferry.Usage.PeakBound(); p > 0 {
				ratio = fmt.Sprintf("%.2fx", float64(bs.Ferry.Usage.PeakBound())/float64(p))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", name[len(name)-1], small, FormatBytes(bs.Ferry.Usage.PeakBound()), ratio, wall, secs(bs.Ferry.Usage.Wall))
	}
	return tw.Flush()
}

// busiest is the largest share of the machine's CPU time that other
// processes used during a timed run.
func (r *Report) busiest() float64 {
	var most float64
	var all []Usage
	for _, s := range r.Scenarios {
		for _, f := range []*FerryRun{s.Ferry, s.FerryZstd} {
			if f != nil {
				all = append(all, f.Usage)
			}
		}
		if s.Peer != nil {
			all = append(all, s.Peer.Usage)
		}
	}
	if p := r.Proxies; p != nil {
		for _, s := range p.Scenarios {
			if s.Ferry != nil {
				all = append(all, s.Ferry.Usage)
			}
		}
		if p.Peer != nil {
			all = append(all, p.Peer.Usage)
		}
		for _, s := range p.Stages {
			all = append(all, s.Usage)
		}
	}
	for _, u := range all {
		if u.Wall > 0 && r.Machine.CPUs > 0 {
			most = max(most, float64(u.OtherCPU)/float64(u.Wall*time.Duration(r.Machine.CPUs)))
		}
	}
	return most
}

func secs(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < 10*time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// FormatBytes writes n in binary units.
func FormatBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v >= 100 {
		return fmt.Sprintf("%.0f %ciB", v, units[i])
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}
