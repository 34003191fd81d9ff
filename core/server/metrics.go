package server

import (
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/status"
)

// Metrics are what the server tells Prometheus (docs/server.md lists
// them): counters of what sessions did, and the state of the jobs and
// their RPO, read from the server at each scrape.
type Metrics struct {
	Registry *prometheus.Registry
	// Proxies says, at each scrape, the task slots of the proxies and how
	// many disk tasks wait for free slots; nil when there are no proxies.
	// Set before the metrics are served.
	Proxies func() (proxies []ProxySlots, waiting int)

	sessions *prometheus.CounterVec
	vms      *prometheus.CounterVec
	retries  *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the metrics of s (and the Go runtime's and the
// process's) in a registry of their own.
func NewMetrics(s *Server) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_sessions_total",
			Help: "Sessions that ended, by job and result (success, warning, failed)."}, []string{"job", "result"}),
		vms: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_vm_results_total",
			Help: "VMs that sessions ended, by job and result (success, warning, failed, skipped)."}, []string{"job", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_vm_retries_total",
			Help: "Attempts at VMs after their first in a session (a job's retry block), by job."}, []string{"job"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bytes_total",
			Help: "Bytes of disk data sessions moved, by job and stage: read at the source, sent over the wire, written at the target."}, []string{"job", "stage"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ferry_session_duration_seconds",
			Help:    "How long sessions took, by job.",
			Buckets: []float64{1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400}}, []string{"job"}),
	}
	m.Registry.MustRegister(m.sessions, m.vms, m.retries, m.bytes, m.duration, stateCollector{s}, proxyCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ProxySlots are the task slots of one proxy.
type ProxySlots struct {
	Proxy, Site string
	Slots       int // how many tasks it takes at once
	Busy        int // how many of them the server's tasks hold
}

// Ended counts a session that ended (a Server's Ended).
func (m *Metrics) Ended(job string, s *catalog.Session, err error) {
	if s == nil {
		m.sessions.WithLabelValues(job, string(catalog.ResultFailed)).Inc()
		return
	}
	m.sessions.WithLabelValues(job, string(s.Result)).Inc()
	t := s.Totals()
	for result, n := range map[catalog.Result]int{catalog.ResultSuccess: t.Success, catalog.ResultWarning: t.Warning,
		catalog.ResultFailed: t.Failed, catalog.ResultSkipped: t.Skipped} {
		if n > 0 {
			m.vms.WithLabelValues(job, string(result)).Add(float64(n))
		}
	}
	retries := 0
	for _, vm := range s.VMs {
		retries += max(vm.Attempts-1, 0)
	}
	m.retries.WithLabelValues(job).Add(float64(retries))
	m.bytes.WithLabelValues(job, "read").Add(float64(t.BytesRead))
	m.bytes.WithLabelValues(job, "sent").Add(float64(t.BytesSent))
	m.bytes.WithLabelValues(job, "written").Add(float64(t.BytesWritten))
	if !s.Ended.IsZero() && !s.Started.IsZero() {
		m.duration.WithLabelValues(job).Observe(s.Ended.Sub(s.Started).Seconds())
	}
}

// stateCollector reads the jobs' state and RPO from the server at each
// scrape.
type stateCollector struct{ s *Server }

var (
	descRunning = prometheus.NewDesc("ferry_sessions_running", "Sessions running now, or waiting for a session slot.", nil, nil)
	descSlots   = prometheus.NewDesc("ferry_session_slots", "Sessions that may run at once (ferry server --max-sessions).", nil, nil)
	descBusy    = prometheus.NewDesc("ferry_session_slots_in_use", "Session slots in use now.", nil, nil)
	descQueued  = prometheus.NewDesc("ferry_runs_queued", "Runs that fell due while their job's session ran, waiting for it to end.", nil, nil)
	descNext    = prometheus.NewDesc("ferry_job_next_run_timestamp_seconds", "When each scheduled job runs next (Unix time).", []string{"job"}, nil)
	descAge     = prometheus.NewDesc("ferry_restore_point_age_seconds", "Seconds since the newest restore point of each VM of the jobs with an RPO (since the server started watching, for a VM with none).", []string{"job", "vm"}, nil)
	descBreach  = prometheus.NewDesc("ferry_rpo_breached", "1 while the newest restore point of a VM is older than its job's RPO, else 0.", []string{"job", "vm"}, nil)
	descRPO     = prometheus.NewDesc("ferry_rpo_seconds", "The RPO of each job that declares one.", []string{"job"}, nil)

	descTestPassed = prometheus.NewDesc("ferry_failover_plan_test_passed", "1 when the last test failover of each tested failover plan passed, 0 when it failed.", []string{"plan"}, nil)
	descLastTest   = prometheus.NewDesc("ferry_failover_plan_last_test_timestamp_seconds", "When the last test failover of each tested failover plan began (Unix time).", []string{"plan"}, nil)
	descNextTest   = prometheus.NewDesc("ferry_failover_plan_next_test_timestamp_seconds", "When the server tests each failover plan with a test_schedule next (Unix time).", []string{"plan"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRunning, descSlots, descBusy, descQueued, descNext, descAge, descBreach, descRPO, descTestPassed, descLastTest, descNextTest} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	var running, queued int
	for _, j := range c.s.Jobs() {
		if j.Running {
			running++
		}
		if j.Queued {
			queued++
		}
		if j.Next != nil {
			ch <- prometheus.MustNewConstMetric(descNext, prometheus.GaugeValue, float64(j.Next.UnixNano())/1e9, j.Name)
		}
		if rpo, ok := c.s.rpoOf(j.Name); ok {
			ch <- prometheus.MustNewConstMetric(descRPO, prometheus.GaugeValue, rpo.Seconds(), j.Name)
		}
	}
	ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(running))
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(queued))
	ch <- prometheus.MustNewConstMetric(descSlots, prometheus.GaugeValue, float64(cap(c.s.slots)))
	ch <- prometheus.MustNewConstMetric(descBusy, prometheus.GaugeValue, float64(len(c.s.slots)))
	for _, st := range c.s.RPO() {
		ch <- prometheus.MustNewConstMetric(descAge, prometheus.GaugeValue, st.Age.Seconds(), st.Job, st.VM)
		breached := 0.0
		if st.Breached {
			breached = 1
		}
		ch <- prometheus.MustNewConstMetric(descBreach, prometheus.GaugeValue, breached, st.Job, st.VM)
	}
	c.collectTests(ch)
}

// collectTests tells each plan's last test, as the catalog keeps it (a
// test from the command line counts), and its next scheduled one.
func (c stateCollector) collectTests(ch chan<- prometheus.Metric) {
	s := c.s
	s.mu.Lock()
	names := slices.Sorted(maps.Keys(s.plans))
	next := map[string]time.Time{}
	for name, t := range s.tests {
		next[name] = t.next
	}
	s.mu.Unlock()
	plans, err := status.Plans(s.cat, names)
	if err != nil {
		s.log.Warn("read the failover plans' last tests for the metrics", "error", err)
	}
	for _, p := range plans {
		if t := p.LastTest; t != nil {
			passed := 0.0
			if t.Passed {
				passed = 1
			}
			ch <- prometheus.MustNewConstMetric(descTestPassed, prometheus.GaugeValue, passed, p.Plan)
			ch <- prometheus.MustNewConstMetric(descLastTest, prometheus.GaugeValue, float64(t.Started.UnixNano())/1e9, p.Plan)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(next)) {
		ch <- prometheus.MustNewConstMetric(descNextTest, prometheus.GaugeValue, float64(next[name].UnixNano())/1e9, name)
	}
}

var (
	descProxySlots   = prometheus.NewDesc("ferry_proxy_task_slots", "Task slots of each proxy: what it said when last greeted, bounded by its max_tasks (the configuration's alone before a greeting).", []string{"proxy", "site"}, nil)
	descProxyBusy    = prometheus.NewDesc("ferry_proxy_task_slots_busy", "Task slots of each proxy that the server's disk tasks hold (a task running both halves on one proxy holds two).", []string{"proxy", "site"}, nil)
	descProxyWaiting = prometheus.NewDesc("ferry_proxy_tasks_waiting", "Disk tasks waiting for free slots: every proxy they may use is busy.", nil, nil)
)

// proxyCollector reads the proxies' slots at each scrape.
type proxyCollector struct{ m *Metrics }

func (c proxyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descProxySlots
	ch <- descProxyBusy
	ch <- descProxyWaiting
}

func (c proxyCollector) Collect(ch chan<- prometheus.Metric) {
	if c.m.Proxies == nil {
		return
	}
	proxies, waiting := c.m.Proxies()
	for _, p := range proxies {
		ch <- prometheus.MustNewConstMetric(descProxySlots, prometheus.GaugeValue, float64(p.Slots), p.Proxy, p.Site)
		ch <- prometheus.MustNewConstMetric(descProxyBusy, prometheus.GaugeValue, float64(p.Busy), p.Proxy, p.Site)
	}
	if len(proxies) > 0 {
		ch <- prometheus.MustNewConstMetric(descProxyWaiting, prometheus.GaugeValue, float64(waiting))
	}
}
