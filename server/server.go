// Package server wires dfsmr together: the bbolt store, the engine, the
// changelog hub and the gRPC services, with health and reflection.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/changes"
	"github.com/dfsmr/dfsmr/server/cluster"
	"github.com/dfsmr/dfsmr/server/device"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/forward"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/metrics"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Defaults of Config.
const (
	// DefaultAddr is loopback only: exposing dfsmr takes a deliberate choice.
	DefaultAddr = "127.0.0.1:5003"
	// DefaultDB is the bbolt file, relative to the working directory.
	DefaultDB = "dfsmr.db"
	// DefaultStopTimeout bounds a graceful stop before it is forced.
	DefaultStopTimeout = 10 * time.Second
	// DefaultLogFormat is the log format dfsmrd writes.
	DefaultLogFormat = "text"
	// DefaultRaftSegmentSize is the size of the log's segment files.
	DefaultRaftSegmentSize = 16 << 20
	// DefaultLogLevel is the least severe level dfsmrd logs.
	DefaultLogLevel = "info"
)

// Config configures a Server. dfsmrd fills it from, in increasing
// precedence, these defaults, an optional YAML file (--config), the
// environment and the command line (see package internal/config): every
// field tagged `yaml:"name"` is the file key name, the flag --name (with
// dashes) and the variable DFSMR_NAME. The help tag is the flag's usage
// text; secret:"true" hides a value from --print-config.
type Config struct {
	// Addr is the gRPC listen address; default DefaultAddr.
	Addr string `yaml:"addr" help:"gRPC listen address"`
	// DB is the path of the bbolt file; default DefaultDB. It is created
	// when missing.
	DB string `yaml:"db" help:"bbolt database file, created if missing"`
	// MachinesDir, when set, is a directory whose *.yaml files are defined
	// at start, after the bundled machines. Zero: none.
	MachinesDir string `yaml:"machines" help:"directory of extra *.yaml machine definitions to define at start"`
	// NoBundled skips defining the bundled machines at start. Zero: they
	// are defined.
	NoBundled bool `yaml:"no_bundled" help:"do not define the bundled machines at start"`
	// StopTimeout bounds a graceful stop: past it, open calls and streams
	// are cut; default DefaultStopTimeout.
	StopTimeout time.Duration `yaml:"stop_timeout" help:"how long a graceful stop waits for calls to finish before forcing"`
	// LogFormat is "text" or "json"; default DefaultLogFormat. dfsmrd
	// builds Logger from it and LogLevel.
	LogFormat string `yaml:"log_format" help:"log format: text or json"`
	// LogLevel is "debug", "info", "warn" or "error"; default
	// DefaultLogLevel. At debug every call is logged.
	LogLevel string `yaml:"log_level" help:"log level: debug, info, warn or error"`
	// MetricsAddr, when set, is the HTTP address serving Prometheus
	// metrics at /metrics. An address without a host (":9464") listens on
	// loopback only; name the host to expose it ("0.0.0.0:9464"). Zero:
	// no metrics endpoint.
	MetricsAddr string `yaml:"metrics_addr" help:"HTTP address of the Prometheus /metrics endpoint, empty for none; a bare :port listens on loopback"`
	// HTTPAddr, when set, is the address of the web dashboard (see
	// docs/dashboard.md). An address without a host (":8080") listens on
	// loopback only. Like Addr, it refuses to listen beyond loopback
	// without TLS and Tokens unless Insecure is set; under TLS it serves
	// HTTPS with TLSCert, and with Tokens browsers log in with a token.
	// Zero: no dashboard.
	HTTPAddr string `yaml:"http_addr" help:"address of the web dashboard, empty for none; a bare :port listens on loopback"`
	// HTTPReadOnly makes the dashboard refuse every action, whatever the
	// viewer's role. Zero: operators act.
	HTTPReadOnly bool `yaml:"http_read_only" help:"the web dashboard only shows; it refuses every action"`
	// HTTPPrefix is the path the dashboard is served under behind a
	// reverse proxy ("/dfsmr"): it starts with a slash and does not end
	// with one. Zero: the root.
	HTTPPrefix string `yaml:"http_prefix" help:"path prefix of the web dashboard behind a reverse proxy, such as /dfsmr"`
	// Pprof adds the Go profiler under /debug/pprof/ on MetricsAddr.
	// Zero: off. It needs MetricsAddr.
	Pprof bool `yaml:"pprof" help:"serve /debug/pprof/ on the metrics address"`
	// Logger receives all logs; default slog.Default().
	Logger *slog.Logger `yaml:"-"`
	// Clock is the time source; default the wall clock.
	Clock clock.Clock `yaml:"-"`

	// TLSCert is the PEM certificate chain the server presents; with
	// TLSKey it turns TLS on. Both files are reloaded when they change.
	// Empty: plaintext.
	TLSCert string `yaml:"tls_cert" help:"PEM certificate chain of the server; turns TLS on, reloaded when the file changes"`
	// TLSKey is the PEM private key of TLSCert.
	TLSKey string `yaml:"tls_key" help:"PEM private key of --tls-cert"`
	// ClientCA, when set, is a PEM bundle of CA certificates: every client
	// must present a certificate one of them signed (mutual TLS), whose
	// name Tokens maps to roles. Needs TLSCert and Tokens.
	ClientCA string `yaml:"client_ca" help:"PEM bundle of the CAs of client certificates; requires mutual TLS"`
	// Tokens is the tokens file (see package auth) that turns
	// authentication on: every call but health and reflection then needs a
	// bearer token or a client certificate it lists, with a role allowed
	// to call the RPC. Reloaded on change and by Server.Reload. Empty: no
	// authentication.
	Tokens string `yaml:"tokens" help:"tokens file of principals and roles; turns authentication on, reloaded on change and on SIGHUP"`
	// Insecure allows listening beyond loopback without TLS and
	// authentication. Without it such a server refuses to start.
	Insecure bool `yaml:"insecure" help:"allow listening beyond loopback without TLS and authentication"`
	// NoReflection turns gRPC server reflection off.
	NoReflection bool `yaml:"no_reflection" help:"turn gRPC server reflection off"`
	// MaxConcurrentStreams bounds the calls in flight on one connection;
	// default DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams" help:"calls in flight per connection"`
	// MaxRecvMsgBytes bounds a request message; a larger one fails with
	// RESOURCE_EXHAUSTED. Default DefaultMaxRecvMsgBytes.
	MaxRecvMsgBytes int `yaml:"max_recv_msg_bytes" help:"largest request message in bytes"`
	// RateLimit is the calls per second each client (principal, or IP
	// address without authentication) may make; more fail with
	// RESOURCE_EXHAUSTED. Default DefaultRateLimit; negative: no limit.
	RateLimit float64 `yaml:"rate_limit" help:"calls per second per client, negative for no limit"`
	// RateBurst is how many calls above RateLimit a client may make at
	// once; default DefaultRateBurst.
	RateBurst int `yaml:"rate_burst" help:"calls a client may make at once above --rate-limit"`
	// MaxStreamsPerClient bounds the streams one client keeps open; one
	// more fails with RESOURCE_EXHAUSTED. Default
	// DefaultMaxStreamsPerClient; negative: no limit.
	MaxStreamsPerClient int `yaml:"max_streams_per_client" help:"open streams per client, negative for no limit"`
	// MaxHistory bounds the changes of one GetInstance history page (and
	// is its default size); clients page through longer histories. A page
	// also ends at MaxResponseBytes. Default engine.DefaultMaxHistory.
	MaxHistory int `yaml:"max_history" help:"most changes of one instance in one GetInstance history page"`
	// MaxConcurrentReads bounds the List pages and GetInstance history
	// pages the server builds at once, over all connections; more wait
	// their turn (until their deadline). Each holds up to about 8 MiB.
	// Default DefaultMaxConcurrentReads; negative: no limit.
	MaxConcurrentReads int `yaml:"max_concurrent_reads" help:"List and history pages built at once, negative for no limit"`
	// MaxConnections bounds the open client connections; one more is
	// closed at once (the client sees UNAVAILABLE), logged at WARN (at
	// most every 10 s) and counted in dfsmr_connections_refused_total.
	// Default DefaultMaxConnections; negative: no limit. The server raises
	// its open file limit to the hard limit at start and warns when this
	// is above it.
	MaxConnections int `yaml:"max_connections" help:"open client connections, negative for no limit"`
	// MaxConnectionsPerIP bounds the open connections from one IP address,
	// refused like those over MaxConnections. Default
	// DefaultMaxConnectionsPerIP; negative: no limit.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip" help:"open client connections from one IP address, negative for no limit"`
	// DeviceReportRate bounds the reports one device stream (Connect) may
	// send a second: past it the server reads the stream's next report
	// only when the stream's token bucket allows, slowing the device down
	// through flow control (reports are not refused; each is answered, in
	// order). Default DefaultDeviceReportRate; negative: no limit.
	DeviceReportRate float64 `yaml:"device_report_rate" help:"reports per second per device stream, negative for no limit"`
	// DeviceReportBurst is how many reports a device stream may send at
	// once above DeviceReportRate; default DefaultDeviceReportBurst.
	DeviceReportBurst int `yaml:"device_report_burst" help:"reports a device stream may send at once above --device-report-rate"`

	// NodeID is this server's id in the cluster, 1 to 64 of
	// [A-Za-z0-9._-], unique for all time. Default: the id recorded in
	// RaftDir by the first start, else the host name.
	NodeID string `yaml:"node_id" help:"this server's id in the cluster (default: the one recorded in --raft-dir, else the host name)"`
	// RaftAddr is the host:port the cluster's log (raft) listens on. A
	// one-server cluster needs none (default: a free loopback port); give
	// every server of a larger one its own.
	RaftAddr string `yaml:"raft_addr" help:"address the cluster's replicated log listens on; needed to form a cluster of several servers"`
	// RaftAdvertise is the host:port the other servers reach RaftAddr at.
	// Default: RaftAddr.
	RaftAdvertise string `yaml:"raft_advertise" help:"address the other servers reach --raft-addr at (default: --raft-addr)"`
	// RaftDir holds the log, its stable store and snapshots. Default: DB
	// with ".raft" appended.
	RaftDir string `yaml:"raft_dir" help:"directory of the replicated log and its snapshots (default: --db with .raft appended)"`
	// Join is the gRPC address of a server of an existing cluster: a
	// server with no log yet asks it to add this one as a voter, and
	// catches up from the leader. Zero: a server with no log starts a
	// cluster (of itself, or of BootstrapPeers).
	Join string `yaml:"join" help:"gRPC address of a member of the cluster to join on first start"`
	// BootstrapPeers is the first voter set of a cluster formed by
	// several servers at once, the same list on each, this one included:
	// "id=raftaddr,...". Zero: a server that does not Join starts alone.
	BootstrapPeers string `yaml:"bootstrap_peers" help:"first voters of a new cluster: id=raft-addr,... (the same on every server, itself included)"`
	// RaftDial maps members to the raft addresses this server dials them
	// at instead of the ones they advertise, "id=addr,...": for a NAT or
	// a proxy between the servers. Zero: the advertised ones.
	RaftDial string `yaml:"raft_dial" help:"dial these members at these raft addresses instead of the advertised ones: id=addr,..."`
	// RaftSnapshotThreshold is how many log entries past the last
	// snapshot make the next check (every RaftSnapshotInterval) take one.
	// Default cluster.DefaultSnapshotThreshold.
	RaftSnapshotThreshold uint64 `yaml:"raft_snapshot_threshold" help:"log entries since the last snapshot that make the next check take one"`
	// RaftSnapshotInterval is how often the server checks whether to
	// snapshot. Default cluster.DefaultSnapshotInterval.
	RaftSnapshotInterval time.Duration `yaml:"raft_snapshot_interval" help:"how often to check whether to snapshot the state"`
	// RaftTrailingLogs is how many entries a snapshot leaves in the log,
	// so that a follower a little behind catches up from the log instead
	// of a whole snapshot. Default cluster.DefaultTrailingLogs.
	RaftTrailingLogs uint64 `yaml:"raft_trailing_logs" help:"log entries a snapshot leaves in the log"`
	// RaftSegmentSize is the size of the log's segment files in bytes;
	// the log drops only whole segments. Default DefaultRaftSegmentSize (16 MiB).
	RaftSegmentSize int `yaml:"raft_segment_size" help:"size of the log's segment files in bytes"`

	// clusterNode, when set, stands in for the server's node in
	// ClusterService (export_test.go).
	clusterNode clusterNode

	// ChangelogRetention is how long a change stays in the changelog,
	// counted from the time it was made: older changes are deleted (a
	// sweep every minute), and a Changes stream from before the oldest one
	// left fails with OUT_OF_RANGE. Default DefaultChangelogRetention;
	// negative: no age bound.
	ChangelogRetention time.Duration `yaml:"changelog_retention" help:"age past which changes leave the changelog, negative for no age bound"`
	// ChangelogRetentionCount is how many of the newest changes the
	// changelog keeps at most, whatever their age. Zero: no count bound
	// (the default); negative is refused.
	ChangelogRetentionCount int `yaml:"changelog_retention_count" help:"most changes the changelog keeps (the newest), 0 for no count bound"`
	// FinishedRetention is how long a FINAL instance is kept after it
	// became FINAL: then it is deleted with its index entries and the
	// index of its history (GetInstance answers NOT_FOUND and its id may
	// be started again); its changes leave the changelog by
	// ChangelogRetention. Default DefaultFinishedRetention; negative: FINAL
	// instances are kept for ever.
	FinishedRetention time.Duration `yaml:"finished_retention" help:"time after which a finished instance is deleted, negative to keep them for ever"`
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.DB == "" {
		c.DB = DefaultDB
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.LogFormat == "" {
		c.LogFormat = DefaultLogFormat
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.MaxHistory == 0 {
		c.MaxHistory = engine.DefaultMaxHistory
	}
	if c.RaftSnapshotThreshold == 0 {
		c.RaftSnapshotThreshold = cluster.DefaultSnapshotThreshold
	}
	if c.RaftSnapshotInterval == 0 {
		c.RaftSnapshotInterval = cluster.DefaultSnapshotInterval
	}
	if c.RaftTrailingLogs == 0 {
		c.RaftTrailingLogs = cluster.DefaultTrailingLogs
	}
	if c.RaftSegmentSize == 0 {
		c.RaftSegmentSize = DefaultRaftSegmentSize
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return c.limitDefaults().securityDefaults().retentionDefaults()
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.StopTimeout < 0 {
		return errors.New("stop timeout must not be negative")
	}
	if c.MachinesDir != "" {
		if fi, err := os.Stat(c.MachinesDir); err != nil || !fi.IsDir() {
			return fmt.Errorf("machines dir %q is not a directory", c.MachinesDir)
		}
	}
	switch c.LogFormat {
	case "", "text", "json":
	default:
		return fmt.Errorf("log format %q: want text or json", c.LogFormat)
	}
	var lvl slog.Level
	if c.LogLevel != "" {
		if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
			return fmt.Errorf("log level %q: want debug, info, warn or error", c.LogLevel)
		}
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return fmt.Errorf("metrics address %q: %w", c.MetricsAddr, err)
		}
	}
	if err := c.validateHTTP(); err != nil {
		return err
	}
	if c.Pprof && c.MetricsAddr == "" {
		return errors.New("pprof needs a metrics address")
	}
	if c.DeviceReportBurst < 0 {
		return errors.New("device_report_burst must not be negative")
	}
	if c.Join != "" && c.BootstrapPeers != "" {
		return errors.New("join and bootstrap_peers exclude each other: a server either joins a cluster or starts one")
	}
	if (c.Join != "" || c.BootstrapPeers != "") && c.RaftAddr == "" {
		return errors.New("raft_addr is needed to join or start a cluster of several servers")
	}
	if c.RaftSnapshotInterval < 0 || c.RaftSegmentSize < 0 {
		return errors.New("raft_snapshot_interval and raft_segment_size must not be negative")
	}
	if c.ChangelogRetentionCount < 0 {
		return errors.New("changelog_retention_count must not be negative (0: no count bound)")
	}
	return c.validateSecurity()
}

// Server is a running dfsmr: store, engine, changelog and gRPC.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   *bolt.Store
	engine  *engine.Engine
	hub     *changes.Hub
	grpc    *grpc.Server
	health  *health.Server
	guard   *guard
	lis     net.Listener
	metrics *metrics.Metrics // nil when MetricsAddr is empty
	http    *http.Server     // the metrics endpoint, once started
	httpLis net.Listener
	// web is the dashboard, nil when HTTPAddr is empty.
	web *webServer

	// nodeP holds this server's member of the cluster's log, from Start on.
	// leaderCh carries its latest leadership change to followLeadership,
	// which closes leaderDone when it returns; firstLead gets the outcome
	// of the first leadership.
	nodeP atomic.Pointer[cluster.Node]
	// leaderChanges counts this server's leadership changes.
	leaderChanges atomic.Uint64
	// fwd forwards the writes a follower receives to the leader.
	fwd        *forward.Forwarder
	leaderCh   chan bool
	leaderDone chan struct{}
	firstLead  chan error

	// draining ends, at the start of Stop, the calls that would otherwise
	// wait for work (long-polling Ready), so a graceful stop does not wait
	// out their timeouts.
	draining context.Context
	drain    context.CancelFunc

	// sessions are the device streams, ended by Stop like the changelog.
	sessions *device.Sessions

	// calls counts the handlers running, so that Stop can tell a call
	// still at work from a response stuck behind a client that stopped
	// reading.
	calls *activeCalls

	stopOnce sync.Once
	stopErr  error
	serveErr chan error
}

// New opens the store, defines the bundled (and configured) machines and
// builds the gRPC server. Nothing listens until Start.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "server"), serveErr: make(chan error, 1), calls: &activeCalls{},
		sessions: &device.Sessions{ReportRate: cfg.DeviceReportRate, ReportBurst: cfg.DeviceReportBurst}}
	g, err := newGuard(cfg)
	if err != nil {
		return nil, err
	}
	s.guard = g
	s.draining, s.drain = context.WithCancel(context.Background())
	if cfg.MetricsAddr != "" {
		s.metrics = metrics.New(metrics.Sources{
			Scheduled:            func() int { return s.engine.Scheduled() },
			LongPolls:            func() int { return s.engine.Waiting() },
			Retries:              func() uint64 { return s.engine.Stats().Retries },
			ChangelogHead:        func() uint64 { return s.hub.Head() },
			Subscribers:          func() int { return s.hub.Watchers() },
			SubscriberMaxLag:     func() int { return s.hub.MaxLag() },
			SubscribersLagged:    func() uint64 { return s.hub.Lagged() },
			DevicesOnline:        s.sessions.Len,
			DeviceRoundsQuiet:    func() uint64 { return s.engine.DeviceStats().QuietRounds },
			DeviceRoundsWritten:  func() uint64 { return s.engine.DeviceStats().WrittenRounds },
			DeviceOldestLastSeen: func() time.Time { return s.engine.DeviceStats().OldestLastSeen },
			Now:                  cfg.Clock.Now,
			ClusterLeader: func() int {
				if s.raftNode() != nil && s.raftNode().IsLeader() {
					return 1
				}
				return 0
			},
			ClusterTerm:          func() uint64 { return s.nodeStatus().Term },
			ClusterCommitIndex:   func() uint64 { return s.nodeStatus().CommitIndex },
			ClusterAppliedIndex:  func() uint64 { return s.nodeStatus().AppliedIndex },
			ClusterLeaderChanges: s.leaderChanges.Load,
		})
	}

	// The store's commit hook feeds the engine and the hub, which need the
	// store to exist first: route it through a pointer set below.
	var onCommit atomic.Pointer[func([]fsm.Change)]
	st, err := bolt.Open(cfg.DB, bolt.Options{
		Logger:         cfg.Logger,
		CommitObserver: s.metrics.ObserveCommit,
		OnCorrupt:      func(*store.CorruptError) { s.metrics.CountCorrupt() },
		CommitHook: func(c []fsm.Change) {
			if f := onCommit.Load(); f != nil {
				(*f)(c)
			}
		},
		OnRestore: func() {
			// The state jumped past changes the hook never saw.
			if err := s.metrics.Load(context.Background(), s.store); err != nil {
				s.log.Error("reload the metrics' counts after a snapshot restore", "err", err)
			}
			if s.hub != nil {
				s.hub.Reset()
			}
		},
	})
	if err != nil {
		return nil, err // it names the file
	}
	s.store = st
	// Writes wait for the log, which Start opens.
	st.SetProposer(startingProposer{})
	// Before the hook is installed, nothing commits: the counts read
	// here and the changes the hook sees add up.
	if err := s.metrics.Load(ctx, st); err != nil {
		st.Close()
		return nil, err
	}
	s.hub = changes.New(st, changes.Options{Logger: cfg.Logger})
	s.engine = engine.New(st, engine.Options{Clock: cfg.Clock, Logger: cfg.Logger, MaxHistory: cfg.MaxHistory,
		Retention: cfg.retention(s.metrics.OnRetention)})
	hook := func(c []fsm.Change) {
		s.hub.Publish(c)
		s.engine.OnCommit(c)
		s.metrics.OnCommit(c)
	}
	onCommit.Store(&hook)

	// The machines are defined by the leader (see lead); their files are
	// read now, so that a bad one stops the start.
	if _, err := s.machineSources(); err != nil {
		st.Close()
		return nil, err
	}

	if cfg.HTTPAddr != "" {
		if s.web, err = newWebServer(cfg, s.engine, s.hub, g); err != nil {
			st.Close()
			return nil, err
		}
	}

	h := &handlers{eng: s.engine, hub: s.hub, log: cfg.Logger, sessions: s.sessions, draining: s.draining, reads: newReadSlots(cfg.MaxConcurrentReads)}
	// On a follower, the calls that write go to the leader (see package
	// forward); the forwarder's interceptors are innermost, so a call is
	// authenticated, limited and logged here first.
	s.fwd = forward.New(forward.Options{
		Leader: s.leaderGRPC,
		Local:  s.servedHere,
		Dial:   memberDialOptions(cfg),
		Codec:  g.codec,
		Logger: cfg.Logger,
	})
	s.grpc = grpc.NewServer(append(append(serverOptions(cfg, g, s.metrics), s.fwd.ServerOptions()...),
		grpc.ChainUnaryInterceptor(s.calls.unary, s.fwd.Unary(), s.linearizableUnary),
		grpc.ChainStreamInterceptor(s.calls.stream, s.fwd.Stream(), s.linearizableStream))...)
	pb.RegisterMachineServiceServer(s.grpc, h)
	pb.RegisterInstanceServiceServer(s.grpc, h)
	pb.RegisterWorkServiceServer(s.grpc, h)
	pb.RegisterChangesServiceServer(s.grpc, h)
	pb.RegisterAdminServiceServer(s.grpc, &admin{store: st})
	pb.RegisterDeviceServiceServer(s.grpc, h)
	pb.RegisterClusterServiceServer(s.grpc, &clusterAPI{node: s.clusterNodeOf(cfg), dial: memberDialOptions(cfg)})
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if !cfg.NoReflection {
		if err := registerReflection(s.grpc); err != nil {
			st.Close()
			return nil, err
		}
	}
	if m := s.metrics.GRPC(); m != nil {
		m.InitializeMetrics(s.grpc)
	}
	return s, nil
}

func serverOptions(cfg Config, g *guard, m *metrics.Metrics) []grpc.ServerOption {
	log := cfg.Logger
	rpcLog := log.With("component", "grpc")
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		rpcLog.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(codeLevel),
	}
	recovered := recovery.WithRecoveryHandlerContext(panicked(rpcLog, m.CountPanic))
	idUnary, idStream := sendRequestID()
	// Recovery is outermost so that a panic anywhere below, including in
	// logging, becomes INTERNAL instead of killing the server. The guard
	// (decoding, authentication, then limits) comes after logging and
	// metrics, so that refused calls are logged and counted too.
	unary := []grpc.UnaryServerInterceptor{
		recovery.UnaryServerInterceptor(recovered),
		idUnary,
		logging.UnaryServerInterceptor(logger, logOpts...),
	}
	stream := []grpc.StreamServerInterceptor{
		recovery.StreamServerInterceptor(recovered),
		idStream,
		logging.StreamServerInterceptor(logger, logOpts...),
	}
	if gm := m.GRPC(); gm != nil {
		// Outside the error mapping, so that calls are counted by the
		// code the client receives.
		unary = append(unary, gm.UnaryServerInterceptor())
		stream = append(stream, gm.StreamServerInterceptor())
	}
	unary = append(append(unary, g.unary()...), unaryErrors(log))
	stream = append(append(stream, g.stream()...), streamErrors(log))
	return append(g.options(cfg),
		// Tags every call with its request id before any interceptor.
		grpc.StatsHandler(requestIDs{}),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	)
}

// codeLevel logs successful calls at debug (a busy server makes thousands
// a second), the caller's mistakes at info, and the server's failures at
// error.
func codeLevel(c codes.Code) logging.Level {
	switch c {
	case codes.OK:
		return logging.LevelDebug
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
		return logging.LevelError
	}
	return logging.LevelInfo
}

// unaryErrors maps handler errors to statuses in one place.
func unaryErrors(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			return nil, toStatus(log, info.FullMethod, err)
		}
		return resp, nil
	}
}

func streamErrors(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return toStatus(log, info.FullMethod, handler(srv, ss))
	}
}

// loadMachines defines the bundled machines and those of MachinesDir.
// Defining unchanged content is a no-op, so this is cheap on every start.
func (s *Server) loadMachines(ctx context.Context) error {
	srcs, err := s.machineSources()
	if err != nil {
		return err
	}
	for _, src := range srcs {
		info, created, err := s.engine.DefineMachine(ctx, src.File, src.Data, engine.SystemActor)
		if err != nil {
			return fmt.Errorf("define %s: %w", src.File, err)
		}
		if created {
			s.log.Info("machine defined", "machine", info.ID, "version", info.Record.Version, "file", src.File)
		}
	}
	return nil
}

// machineSources reads the bundled machines and those of MachinesDir.
func (s *Server) machineSources() ([]machines.Source, error) {
	var srcs []machines.Source
	if !s.cfg.NoBundled {
		srcs = machines.Bundled()
	}
	if dir := s.cfg.MachinesDir; dir != "" {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			return nil, err
		}
		more, _ := filepath.Glob(filepath.Join(dir, "*.yml"))
		files = append(files, more...)
		sort.Strings(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			srcs = append(srcs, machines.Source{File: f, Data: b})
		}
	}
	return srcs, nil
}

// Engine returns the server's engine (for in-process tools and tests).
func (s *Server) Engine() *engine.Engine { return s.engine }

// StoreStats returns the store's commit counters (for in-process tools,
// such as the benchmark, and tests).
func (s *Server) StoreStats() store.Stats { return s.store.Stats() }

// Start listens on the configured address (or lis, when not nil), runs the
// engine and serves gRPC in the background. It returns once the server
// accepts connections.
func (s *Server) Start(ctx context.Context, lis net.Listener) error {
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return err
		}
	} else if err := s.cfg.checkExposure(lis.Addr().String()); err != nil {
		return err
	}
	s.checkFileLimit()
	lis = newLimitListener(lis, s.cfg.MaxConnections, s.cfg.MaxConnectionsPerIP,
		s.log, s.cfg.Clock, s.metrics.CountRefusedConn)
	s.lis = lis
	if err := s.serveMetrics(); err != nil {
		_ = lis.Close()
		return err
	}
	if err := s.web.start(s.log); err != nil {
		_ = lis.Close()
		if s.http != nil {
			_ = s.http.Close()
		}
		return err
	}
	if err := s.openCluster(lis.Addr().String()); err != nil {
		_ = lis.Close()
		s.web.stop(ctx)
		return err
	}
	if err := s.waitFirstLead(ctx); err != nil {
		_ = lis.Close()
		s.web.stop(ctx)
		s.drain()
		<-s.leaderDone
		_ = s.raftNode().Shutdown()
		return err
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	go func() { s.serveErr <- s.grpc.Serve(lis) }()
	s.log.Info("serving", "addr", lis.Addr().String(), "db", s.cfg.DB, "tls", s.guard.creds != nil, "mtls", s.cfg.ClientCA != "", "auth", s.guard.auth != nil)
	if !loopback(lis.Addr().String()) && (s.guard.creds == nil || s.guard.auth == nil) {
		s.log.Warn("serving beyond loopback without TLS and authentication (--insecure): anyone who reaches this address controls dfsmr")
	}
	return nil
}

// Addr is the address the server listens on (after Start).
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Wait blocks until the gRPC server stops serving.
func (s *Server) Wait() error { return <-s.serveErr }

// MetricsAddr is the address of the metrics endpoint (after Start), or
// "" when it is off.
func (s *Server) MetricsAddr() string {
	if s.httpLis == nil {
		return ""
	}
	return s.httpLis.Addr().String()
}

// Metrics returns the server's metrics, nil when MetricsAddr is empty (the
// methods of a nil *metrics.Metrics do nothing).
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// serveMetrics listens on MetricsAddr, when set; an address without a host
// is loopback only.
func (s *Server) serveMetrics() error {
	if s.metrics == nil {
		return nil
	}
	addr := s.cfg.MetricsAddr
	if host, port, _ := net.SplitHostPort(addr); host == "" {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	s.httpLis = lis
	s.http = &http.Server{Handler: s.metrics.Handler(s.cfg.Pprof), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.http.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics endpoint failed", "err", err)
		}
	}()
	s.log.Info("serving metrics", "addr", lis.Addr().String(), "pprof", s.cfg.Pprof)
	return nil
}

// Stop stops gracefully: it stops accepting, ends the streams and the
// long-polling Ready calls with UNAVAILABLE (clients reconnect elsewhere or
// later), lets in-flight calls finish and their commits become durable,
// stops the engine, then closes the store, which commits what is queued.
// Past StopTimeout, or when ctx ends, the calls still open are cut; what
// was acknowledged is durable either way. Stop is idempotent and safe when
// the server was never started.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.health.Shutdown()
		s.drain()
		// The dashboard's event streams never end on their own either.
		s.web.stop(ctx)
		// Streams never end on their own: close the hub first so that
		// watchers get UNAVAILABLE and GracefulStop can finish.
		s.hub.Close()
		s.sessions.Close()
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		timer := time.NewTimer(s.cfg.StopTimeout)
		defer timer.Stop()
	wait:
		for {
			select {
			case <-done:
				break wait
			case <-s.calls.idle():
				// Every handler has returned its status. What GracefulStop
				// may still wait for is the flushing of responses, which a
				// client that stopped reading never lets finish: give the
				// others flushGrace, then close the connections.
				flush := time.NewTimer(flushGrace)
				select {
				case <-done:
					flush.Stop()
					break wait
				case <-flush.C:
					if s.calls.running() == 0 {
						s.log.Warn("closing the connections of clients that do not read their responses")
						s.grpc.Stop()
						break wait
					}
				case <-timer.C:
					flush.Stop()
					s.log.Warn("graceful stop timed out; forcing")
					s.grpc.Stop()
					break wait
				case <-ctx.Done():
					flush.Stop()
					s.log.Warn("stop forced")
					s.grpc.Stop()
					break wait
				}
			case <-timer.C:
				s.log.Warn("graceful stop timed out; forcing")
				s.grpc.Stop()
				break wait
			case <-ctx.Done():
				s.log.Warn("stop forced")
				s.grpc.Stop()
				break wait
			}
		}
		var errs []string
		// The scheduler ends at once once cancelled; wait for it even when
		// ctx forced the stop, so that it is not mid-commit at Close.
		if s.raftNode() != nil {
			<-s.leaderDone
		}
		if err := s.engine.Follow(context.WithoutCancel(ctx)); err != nil {
			errs = append(errs, err.Error())
		}
		if s.raftNode() != nil {
			if err := s.raftNode().Shutdown(); err != nil {
				errs = append(errs, err.Error())
			}
		}
		if err := s.fwd.Close(); err != nil {
			errs = append(errs, err.Error())
		}
		if err := s.store.Close(); err != nil {
			errs = append(errs, err.Error())
		}
		if s.http != nil {
			if err := s.http.Close(); err != nil {
				errs = append(errs, err.Error())
			}
		}
		if len(errs) > 0 {
			s.stopErr = errors.New(strings.Join(errs, "; "))
		}
		s.log.Info("stopped")
	})
	return s.stopErr
}
