// Package metrics exposes dfsmr's Prometheus metrics: the gRPC server's
// calls, the instances by machine, node and status, leases, timeouts,
// retries, circuit breakers, the scheduler, the changelog and its
// subscribers, devices, and the store's commits.
//
// Nothing here scans the store per scrape. Instance counts are read once
// from the store at start (Load) and then kept by the commit hook
// (OnCommit), which sees every committed change; the rest is read from
// counters the server's parts keep anyway. Every method is safe on a nil
// *Metrics, so callers need not check whether metrics are on.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// Namespace prefixes every dfsmr metric (the gRPC ones are grpc_server_*).
const Namespace = "dfsmr"

// loadPage is how many instances one read of Load fetches.
const loadPage = 1000

// Sources are the server's gauges and counters that live elsewhere, read at
// scrape time. A nil func reports 0.
type Sources struct {
	// Scheduled is how many instances the scheduler waits on.
	Scheduled func() int
	// LongPolls is how many Ready calls are blocked waiting for work.
	LongPolls func() int
	// Retries counts committed retries.
	Retries func() uint64
	// ChangelogHead is the last committed changelog sequence number.
	ChangelogHead func() uint64
	// Subscribers is how many Changes streams tail the changelog.
	Subscribers func() int
	// SubscriberMaxLag is the slowest subscriber's backlog, in changes.
	SubscriberMaxLag func() int
	// SubscribersLagged counts streams ended for falling behind.
	SubscribersLagged func() uint64
	// DevicesOnline is how many devices have a Connect stream open.
	DevicesOnline func() int
	// DeviceRoundsQuiet and DeviceRoundsWritten count the device rounds
	// that wrote nothing and those that committed a decision.
	DeviceRoundsQuiet   func() uint64
	DeviceRoundsWritten func() uint64
	// DeviceOldestLastSeen is the earliest last-seen time of the devices
	// connected right now; zero when none.
	DeviceOldestLastSeen func() time.Time
	// Now is the server's clock, for the ages of leases. Nil: the wall
	// clock.
	Now func() time.Time
	// ClusterLeader is 1 while this server leads its cluster, else 0.
	ClusterLeader func() int
	// ClusterTerm, ClusterCommitIndex and ClusterAppliedIndex are the
	// raft term and the indexes of the last entry known committed and of
	// the last one applied here.
	ClusterTerm, ClusterCommitIndex, ClusterAppliedIndex func() uint64
	// ClusterLeaderChanges counts the times this server became or
	// stopped being the leader.
	ClusterLeaderChanges func() uint64
}

// Metrics is the registry of one server's metrics.
type Metrics struct {
	reg  *prometheus.Registry
	grpc *grpcprom.ServerMetrics

	mu sync.Mutex
	// instances counts instances by machine, node and status.
	instances map[instanceKey]int64
	// breakers is 1 for each machine whose circuit breaker is open.
	breakers map[string]bool
	// leases holds the times of every outstanding lease, by instance: one
	// entry per lease, so a scrape costs the number of leases, not of
	// instances.
	leases map[string]leaseTimes
	now    func() time.Time

	changes       *prometheus.CounterVec
	byKind        []prometheus.Counter // changes' children, by fsm.ChangeKind
	commitOps     prometheus.Histogram
	commitSeconds prometheus.Histogram
	panics        prometheus.Counter
	corrupt       prometheus.Counter
	connsRefused  *prometheus.CounterVec
	retained      *prometheus.CounterVec
}

type instanceKey struct {
	machine, node string
	status        fsm.Status
}

// leaseTimes are when a lease was granted or last extended by a heartbeat,
// and when it expires (zero: never).
type leaseTimes struct {
	renewed, expires time.Time
}

// New builds the registry: gRPC server metrics, Go runtime and process
// metrics, and dfsmr's own, with src read at every scrape.
func New(src Sources) *Metrics {
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		instances: map[instanceKey]int64{},
		breakers:  map[string]bool{},
		leases:    map[string]leaseTimes{},
		now:       src.Now,
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 60}),
		)),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "changes_total",
			Help: "Changelog entries committed, by kind (TIMED_OUT: lease timeouts; FAILED: retries used up).",
		}, []string{"kind"}),
		commitOps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "store_commit_batch_size",
			Help:    "Operations made durable by one write of the leader (group commit): one log entry.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "store_commit_seconds",
			Help:    "Duration of one write of the leader, from proposing its log entry to applying it (log fsync on a quorum, then page writes and fsync).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "connections_refused_total",
			Help: "Connections closed at once because a connection limit was reached, by limit (total, per_ip).",
		}, []string{"limit"}),
		retained: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "retention_deleted_total",
			Help: "Records retention deleted, by kind (changes: changelog entries past changelog_retention or its count; instances: FINAL instances past finished_retention).",
		}, []string{"kind"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "grpc_panics_total",
			Help: "Handler panics recovered into INTERNAL.",
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "store_corrupt_records_total",
			Help: "Corrupt store records met: by the file check at start and by calls that failed with DATA_LOSS on one. Run dfsmrd check on a backup.",
		}),
	}
	// Both limits show from the start, at 0, so that a rate over them works
	// before the first refusal.
	m.connsRefused.WithLabelValues("total")
	m.connsRefused.WithLabelValues("per_ip")
	m.retained.WithLabelValues(retainedChanges)
	m.retained.WithLabelValues(retainedInstances)
	m.reg.MustRegister(
		m.grpc,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.changes, m.commitOps, m.commitSeconds, m.panics, m.corrupt, m.connsRefused, m.retained,
		instanceCollector{m},
		gaugeFunc("scheduler_queue_depth", "Instances the scheduler waits on: WAITING ones and leases that can expire.", src.Scheduled),
		gaugeFunc("ready_long_polls", "Ready calls blocked waiting for work.", src.LongPolls),
		counterFunc("retries_total", "Failed attempts retried in their node (an error edge back into the node, or a lease timeout).", src.Retries),
		gaugeFunc("changelog_head_seq", "Last committed changelog sequence number.", src.ChangelogHead),
		gaugeFunc("changelog_subscribers", "Changes streams tailing the changelog.", src.Subscribers),
		gaugeFunc("changelog_subscriber_max_lag", "Changes the slowest subscriber has queued and not yet received.", src.SubscriberMaxLag),
		gaugeFunc("devices_online", "Devices connected right now (Connect streams).", src.DevicesOnline),
		counterFunc("device_rounds_quiet_total", "Device rounds that decided nothing and wrote nothing (their seq, last-seen time and progress are kept in memory and written in batches).", src.DeviceRoundsQuiet),
		counterFunc("device_rounds_written_total", "Device rounds that committed a decision (a command, a job moved, a change, a new node).", src.DeviceRoundsWritten),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "device_last_seen_oldest_seconds",
			Help: "Seconds since the connected device heard from longest ago last sent a message; 0 without devices."}, m.lastSeenAge(src.DeviceOldestLastSeen)),
		counterFunc("changelog_subscribers_lagged_total", "Changes streams ended for falling too far behind (ABORTED with resume_from_seq).", src.SubscribersLagged),
		gaugeFunc("cluster_leader", "1 while this server leads its cluster, else 0.", src.ClusterLeader),
		gaugeFunc("cluster_term", "The raft term this server is in.", src.ClusterTerm),
		gaugeFunc("cluster_commit_index", "Index of the last log entry this server knows committed.", src.ClusterCommitIndex),
		gaugeFunc("cluster_applied_index", "Index of the last log entry applied to this server's database.", src.ClusterAppliedIndex),
		counterFunc("cluster_leadership_changes_total", "Times this server became or stopped being the leader.", src.ClusterLeaderChanges),
	)
	// One child per kind, looked up once: the commit hook indexes them, and
	// every kind exports 0 from the start, so rates work at once.
	m.byKind = []prometheus.Counter{nil} // no UNSPECIFIED change is committed
	for k := fsm.ChangeUnspecified + 1; k.String() != "UNKNOWN"; k++ {
		m.byKind = append(m.byKind, m.changes.WithLabelValues(k.String()))
	}
	return m
}

func gaugeFunc[T int | uint64](name, help string, f func() T) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, valueOf(f))
}

func counterFunc[T int | uint64](name, help string, f func() T) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, valueOf(f))
}

func valueOf[T int | uint64](f func() T) func() float64 {
	return func() float64 {
		if f == nil {
			return 0
		}
		return float64(f())
	}
}

// lastSeenAge returns the age of the time oldest returns, in seconds, by
// the metrics' clock; 0 when there is none.
func (m *Metrics) lastSeenAge(oldest func() time.Time) func() float64 {
	return func() float64 {
		if oldest == nil {
			return 0
		}
		t := oldest()
		if t.IsZero() {
			return 0
		}
		now := time.Now
		if m.now != nil {
			now = m.now
		}
		return max(0, now().Sub(t).Seconds())
	}
}

// GRPC returns the gRPC server metrics, whose interceptors the server
// installs; nil when m is nil.
func (m *Metrics) GRPC() *grpcprom.ServerMetrics {
	if m == nil {
		return nil
	}
	return m.grpc
}

// Load counts the instances and reads the circuit breakers in st, in one
// read transaction. Call it once, before st commits anything that OnCommit
// does not see: it reads every instance, a few microseconds each
// (BenchmarkLoad), so a few seconds per million.
func (m *Metrics) Load(ctx context.Context, st store.Store) error {
	if m == nil {
		return nil
	}
	counts := map[instanceKey]int64{}
	breakers := map[string]bool{}
	leases := map[string]leaseTimes{}
	err := st.View(ctx, func(tx store.ReadTx) error {
		clear(counts)
		clear(breakers)
		clear(leases)
		for after := ""; ; {
			page, err := tx.Instances(store.InstanceFilter{}, after, loadPage)
			var ce *store.CorruptError
			if errors.As(err, &ce) && ce.Bucket == "instances" && string(ce.Key) > after {
				// A damaged record is not counted; the store reported it.
				after = string(ce.Key)
				continue
			}
			if err != nil {
				return err
			}
			for i := range page {
				in := &page[i]
				counts[instanceKey{in.Machine, in.Node, in.Status}]++
				if in.Status == fsm.StatusLeased {
					// Heartbeats are not stored: after a restart a lease
					// counts from its grant.
					leases[in.ID] = leaseTimes{renewed: in.Lease.AcquiredAt, expires: in.Lease.ExpiresAt}
				}
			}
			if len(page) < loadPage {
				break
			}
			after = page[len(page)-1].ID
		}
		for after := ""; ; {
			page, err := tx.Machines(after, loadPage)
			if err != nil {
				return err
			}
			for _, rec := range page {
				b, err := tx.Breaker(rec.ID)
				if err != nil {
					return err
				}
				breakers[rec.ID] = b.Open
			}
			if len(page) < loadPage {
				break
			}
			after = page[len(page)-1].ID
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("metrics: load counts: %w", err)
	}
	m.mu.Lock()
	m.instances, m.breakers, m.leases = counts, breakers, leases
	m.mu.Unlock()
	return nil
}

// OnCommit must receive every committed change (see store.CommitHook). It
// moves each changed instance from its old machine, node and status to its
// new ones, and counts the change by kind.
func (m *Metrics) OnCommit(changes []fsm.Change) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range changes {
		c := &changes[i]
		if int(c.Kind) < len(m.byKind) && m.byKind[c.Kind] != nil {
			m.byKind[c.Kind].Inc()
		} else {
			m.changes.WithLabelValues(c.Kind.String()).Inc()
		}
		switch c.Kind {
		case fsm.ChangeMachineDefined:
			if _, ok := m.breakers[c.Machine]; !ok {
				m.breakers[c.Machine] = false
			}
		case fsm.ChangeBreakerOpened:
			m.breakers[c.Machine] = true
		case fsm.ChangeBreakerClosed:
			m.breakers[c.Machine] = false
		}
		// Only a change with a status after it moves an instance. Device
		// changes (commands, notices) name the job they are about but leave
		// it where it is: counting them would add an UNSPECIFIED instance
		// per command, without bound on a printer farm.
		if c.Instance == "" || c.ToStatus == fsm.StatusUnspecified {
			continue
		}
		if c.FromStatus != fsm.StatusUnspecified { // not a start
			from := instanceKey{c.Machine, c.FromNode, c.FromStatus}
			if m.instances[from]--; m.instances[from] == 0 {
				delete(m.instances, from)
			}
		}
		m.instances[instanceKey{c.Machine, c.ToNode, c.ToStatus}]++
		switch {
		case c.ToStatus != fsm.StatusLeased:
			delete(m.leases, c.Instance)
		case c.Kind == fsm.ChangeLeased, c.Kind == fsm.ChangeHeartbeat:
			m.leases[c.Instance] = leaseTimes{renewed: c.At, expires: c.DueAt}
		}
		// Other changes that keep an instance LEASED (an upgrade to a new
		// version) keep its lease as it was.
	}
}

// Instances returns the instance counts by machine, node and status (for
// tests and tools).
func (m *Metrics) Instances() map[[3]string]int64 {
	out := map[[3]string]int64{}
	if m == nil {
		return out
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, n := range m.instances {
		out[[3]string{k.machine, k.node, k.status.String()}] = n
	}
	return out
}

// ObserveCommit is the store's commit observer: one commit of ops
// operations took took.
func (m *Metrics) ObserveCommit(ops int, took time.Duration) {
	if m == nil {
		return
	}
	m.commitOps.Observe(float64(ops))
	m.commitSeconds.Observe(took.Seconds())
}

// CountPanic counts a handler panic recovered into INTERNAL.
func (m *Metrics) CountPanic() {
	if m != nil {
		m.panics.Inc()
	}
}

// CountCorrupt counts a corrupt store record met.
func (m *Metrics) CountCorrupt() {
	if m != nil {
		m.corrupt.Inc()
	}
}

// Labels of dfsmr_retention_deleted_total.
const (
	retainedChanges   = "changes"
	retainedInstances = "instances"
)

// OnRetention counts what one committed batch of the retention sweeper
// deleted, and takes the deleted instances out of the instance counts:
// their deletion is no change, so OnCommit does not see it.
func (m *Metrics) OnRetention(changes int, instances []fsm.Instance) {
	if m == nil {
		return
	}
	m.retained.WithLabelValues(retainedChanges).Add(float64(changes))
	m.retained.WithLabelValues(retainedInstances).Add(float64(len(instances)))
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range instances {
		in := &instances[i]
		k := instanceKey{in.Machine, in.Node, in.Status}
		if m.instances[k]--; m.instances[k] <= 0 {
			delete(m.instances, k)
		}
	}
}

// CountRefusedConn counts a connection refused by a connection limit:
// limit is "total" or "per_ip".
func (m *Metrics) CountRefusedConn(limit string) {
	if m != nil {
		m.connsRefused.WithLabelValues(limit).Inc()
	}
}

// Handler serves the metrics at /metrics and, with pprof, the Go profiler
// under /debug/pprof/.
func (m *Metrics) Handler(withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// instanceCollector exports the instance counts, the leases outstanding
// and their ages, and the breakers from m's maps at scrape time: one line per machine,
// node and status in use, whatever the number of instances.
type instanceCollector struct{ m *Metrics }

var (
	instancesDesc = prometheus.NewDesc(Namespace+"_instances",
		"Instances by machine, node and status.", []string{"machine", "node", "status"}, nil)
	leasesDesc = prometheus.NewDesc(Namespace+"_leases_outstanding",
		"Instances leased to a worker right now.", nil, nil)
	leaseOldestDesc = prometheus.NewDesc(Namespace+"_lease_oldest_seconds",
		"Seconds since the oldest outstanding lease was granted or last extended by a heartbeat (after a restart: since its grant); 0 without leases.", nil, nil)
	leasesPastExpiryDesc = prometheus.NewDesc(Namespace+"_leases_past_expiry",
		"Outstanding leases whose expiry has passed: the scheduler has not timed them out yet.", nil, nil)
	breakerDesc = prometheus.NewDesc(Namespace+"_breaker_open",
		"1 when the machine's circuit breaker is open (retries slowed), else 0.", []string{"machine"}, nil)
)

func (c instanceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- instancesDesc
	ch <- leasesDesc
	ch <- leaseOldestDesc
	ch <- leasesPastExpiryDesc
	ch <- breakerDesc
}

func (c instanceCollector) Collect(ch chan<- prometheus.Metric) {
	// Copy under the lock, send without it: the commit hook takes the
	// lock on the store's writer goroutine, which a slow scrape must not
	// hold up.
	now := time.Now
	if c.m.now != nil {
		now = c.m.now
	}
	t := now()
	c.m.mu.Lock()
	instances := maps.Clone(c.m.instances)
	breakers := maps.Clone(c.m.breakers)
	var oldest time.Duration
	var pastExpiry int
	for _, l := range c.m.leases {
		oldest = max(oldest, t.Sub(l.renewed))
		if !l.expires.IsZero() && t.After(l.expires) {
			pastExpiry++
		}
	}
	c.m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(leaseOldestDesc, prometheus.GaugeValue, oldest.Seconds())
	ch <- prometheus.MustNewConstMetric(leasesPastExpiryDesc, prometheus.GaugeValue, float64(pastExpiry))
	var leased int64
	for k, n := range instances {
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(n), k.machine, k.node, k.status.String())
		if k.status == fsm.StatusLeased {
			leased += n
		}
	}
	ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, float64(leased))
	for machine, open := range breakers {
		v := 0.0
		if open {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(breakerDesc, prometheus.GaugeValue, v, machine)
	}
}
