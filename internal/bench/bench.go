// Package bench measures dfsmr's durable throughput: N instances of a
// three-step machine run through W concurrent workers with no-op handlers,
// every step acknowledged only once it is fsync'd. In the same run and
// over the same connection it measures the rate of round-trip pairs of a
// no-op unary RPC (the gRPC health Check), so that the figure can be read
// as a ratio to what the transport alone allows on this machine.
//
// With Config.Nodes above 1 the in-process servers form a cluster of the
// replicated log (the first bootstraps it, the others join it) and the
// load is spread over every server, whose followers forward the writes to
// the leader (or, with Via ViaLeader, sent to the leader only); the
// figures can then be read against a one-node run of the same mode.
//
// A step is one node's work reported: Ready (lease) plus Transition, or
// its share of a batched Ready. The baseline pair stands for the two RPCs
// a per-call step needs, so a ratio of 1 means a durable step costs no
// more than two empty RPCs.
package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/store"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Modes of a run.
const (
	// ModePerCall: each worker loops Ready (one instance) then Transition.
	ModePerCall = "per-call"
	// ModeBatchedReady: client.Worker, leasing up to Batch instances per
	// Ready and reporting each with its own Transition.
	ModeBatchedReady = "batched-ready"
	// ModeBatched: client.Worker, leasing up to Batch instances per Ready
	// and reporting with TransitionBatch (the Worker's default).
	ModeBatched = "batched"
	// ModeContinue: ModeBatched with continuation (WorkerOptions.Continue):
	// the server leases each instance's next step straight back to the
	// worker in the commit of its transition.
	ModeContinue = "continue"
	// ModeRefill: ModeContinue with refill (WorkerOptions.Refill): a slot
	// whose instance finished gets the next READY instance in the same
	// commit, so that the workers make no Ready call once they are full.
	ModeRefill = "refill"
)

// Where the load goes in a cluster (Config.Via).
const (
	// ViaAll spreads the workers and the baseline over every server: the
	// followers forward writes to the leader.
	ViaAll = "all"
	// ViaLeader sends all the load to the leader.
	ViaLeader = "leader"
)

// Modes lists the modes, in the order "all" runs them.
var Modes = []string{ModePerCall, ModeBatchedReady, ModeBatched, ModeContinue, ModeRefill}

// Defaults of Config.
const (
	DefaultInstances = 20000
	DefaultWorkers   = 64
	DefaultBatch     = 64
	DefaultPollers   = 1
	DefaultBaseline  = 2 * time.Second
)

// Machine is the benchmark's machine: three steps and a final node.
const Machine = "bench"

// machineYAML defines Machine. Steps never fail in a run, so the retry
// policy does not matter; the lease timeout is long so that a loaded
// machine never times a lease out.
const machineYAML = `id: bench
description: Three no-op steps, for dfsmr bench.
nodes:
  one:
    start: true
    timeout: 5m
    transitions: {ok: two}
  two:
    timeout: 5m
    transitions: {ok: three}
  three:
    timeout: 5m
    transitions: {ok: done}
  done: {final: true}
`

// steps is the number of steps of one instance of Machine.
const steps = 3

var nodes = []string{"one", "two", "three"}

// Config configures a run. The zero value runs per-call mode with the
// defaults on an in-process server.
type Config struct {
	// Addr is a server to target; empty starts one in-process, on a fresh
	// bbolt file (fsync on) in Dir.
	Addr string
	// Dir holds the in-process server's file; empty: a temporary directory,
	// removed at the end.
	Dir string
	// Mode is one of Modes; default ModePerCall.
	Mode string
	// Instances is how many instances run; default DefaultInstances.
	Instances int
	// Workers is how many concurrent workers (goroutines running a step, or
	// the Worker's concurrency); default DefaultWorkers.
	Workers int
	// Batch is the most instances one Ready leases in batched mode; default
	// DefaultBatch.
	Batch int
	// Pollers is how many Ready calls per node the worker keeps in flight
	// in batched mode; default DefaultPollers.
	Pollers int
	// Baseline is how long the baseline runs; default DefaultBaseline.
	Baseline time.Duration
	// Nodes is how many in-process servers run, as one cluster of the
	// replicated log on loopback; default 1. Must be 1 with Addr.
	Nodes int
	// Via is where the load goes in a cluster: ViaAll (default) or
	// ViaLeader.
	Via string
	// Logger receives the in-process servers' and the worker's logs;
	// default: discarded.
	Logger *slog.Logger
}

// Result holds a run's figures. Its JSON form is the last line of
// `dfsmr bench`.
type Result struct {
	Mode string `json:"mode"`
	// Nodes is the number of servers of the cluster that ran the steps
	// (1 against Addr, whatever stands behind it).
	Nodes int `json:"nodes"`
	// Via is where the load went in a cluster (ViaAll or ViaLeader); empty
	// for one node.
	Via       string `json:"via,omitempty"`
	Instances int    `json:"instances"`
	Workers   int    `json:"workers"`
	// Completed is how many of the run's instances reached the final node.
	Completed int `json:"completed"`
	// Steps is the number of steps reported (Instances x 3 when all
	// completed).
	Steps   int     `json:"steps"`
	Seconds float64 `json:"seconds"`
	// StepsPerS is Steps / Seconds: durable steps per second.
	StepsPerS float64 `json:"steps_per_s"`
	// BaselinePairsPerS is the rate of pairs of no-op unary RPCs (health
	// Check) with the same client, server and concurrency.
	BaselinePairsPerS float64 `json:"baseline_pairs_per_s"`
	// Ratio is StepsPerS / BaselinePairsPerS.
	Ratio float64 `json:"ratio"`
	// P50Ms and P99Ms are Transition latencies seen by the client.
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	// ReadyCalls is the number of Ready calls that leased work.
	ReadyCalls int `json:"ready_calls"`
	// CommitsPerS and FsyncsPerS are the store's (the leader's in a
	// cluster), during the run; zero against --addr (the store is not in
	// this process). FsyncsPerS counts the state file's fsyncs, not those
	// of the replicated log, which syncs every append too.
	CommitsPerS float64 `json:"commits_per_s"`
	FsyncsPerS  float64 `json:"fsyncs_per_s"`
	// OpsPerCommit is how many operations one commit carried on average
	// (group commit); zero against --addr.
	OpsPerCommit float64 `json:"ops_per_commit"`
	// VsOneNode is StepsPerS over that of a one-node run of the same mode
	// (Compare); zero when there was none.
	VsOneNode float64 `json:"vs_one_node,omitempty"`
}

// Compare sets r.VsOneNode from one, a one-node run of the same mode.
func (r *Result) Compare(one Result) {
	if one.StepsPerS > 0 {
		r.VsOneNode = r.StepsPerS / one.StepsPerS
	}
}

// String is the human summary of r, one figure per line.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode              %s (%d instances x %d steps, %d workers)\n", r.Mode, r.Instances, steps, r.Workers)
	if r.Nodes > 1 {
		fmt.Fprintf(&b, "nodes             %d (load via %s)\n", r.Nodes, r.Via)
	}
	fmt.Fprintf(&b, "completed         %d/%d instances, %d steps in %.2fs\n", r.Completed, r.Instances, r.Steps, r.Seconds)
	fmt.Fprintf(&b, "durable steps/s   %.0f\n", r.StepsPerS)
	fmt.Fprintf(&b, "transition        p50 %.2fms  p99 %.2fms\n", r.P50Ms, r.P99Ms)
	fmt.Fprintf(&b, "ready calls       %d (%.1f leases each)\n", r.ReadyCalls, float64(r.Steps)/math.Max(1, float64(r.ReadyCalls)))
	if r.CommitsPerS > 0 {
		fmt.Fprintf(&b, "commits/s         %.0f (%.1f ops each)\n", r.CommitsPerS, r.OpsPerCommit)
		fmt.Fprintf(&b, "fsyncs/s          %.0f (of the state file; the log's own are not counted)\n", r.FsyncsPerS)
	}
	fmt.Fprintf(&b, "baseline          %.0f no-op RPC pairs/s (health Check x2)\n", r.BaselinePairsPerS)
	fmt.Fprintf(&b, "ratio             %.2f steps per baseline pair\n", r.Ratio)
	if r.VsOneNode > 0 {
		fmt.Fprintf(&b, "vs one node       %.2f (steps/s of %d nodes / steps/s of 1)\n", r.VsOneNode, r.Nodes)
	}
	return b.String()
}

func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModePerCall
	}
	if c.Instances == 0 {
		c.Instances = DefaultInstances
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	if c.Baseline == 0 {
		c.Baseline = DefaultBaseline
	}
	if c.Pollers == 0 {
		c.Pollers = DefaultPollers
	}
	if c.Nodes == 0 {
		c.Nodes = 1
	}
	if c.Via == "" {
		c.Via = ViaAll
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first field out of range.
func (c Config) Validate() error {
	switch {
	case c.Mode != "" && !slices.Contains(Modes, c.Mode):
		return fmt.Errorf("mode %q: want one of %s", c.Mode, strings.Join(Modes, ", "))
	case c.Instances < 0:
		return errors.New("instances must not be negative")
	case c.Workers < 0:
		return errors.New("workers must not be negative")
	case c.Batch < 0 || c.Batch > client.MaxBatch:
		return fmt.Errorf("batch must be between 1 and %d", client.MaxBatch)
	case c.Pollers < 0:
		return errors.New("pollers must not be negative")
	case c.Baseline < 0:
		return errors.New("baseline must not be negative")
	case c.Nodes < 0:
		return errors.New("nodes must not be negative")
	case c.Nodes > 1 && c.Addr != "":
		return errors.New("nodes: a cluster runs in this process, not with an address")
	case c.Via != "" && c.Via != ViaAll && c.Via != ViaLeader:
		return fmt.Errorf("via %q: want %s or %s", c.Via, ViaAll, ViaLeader)
	}
	return nil
}

// Run runs one benchmark: it starts (or dials) the servers, defines the
// machine, starts the instances, measures the baseline, then runs every
// instance to completion and returns the figures.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	cfg = cfg.withDefaults()
	addrs := []string{cfg.Addr}
	var srvs []*server.Server
	if cfg.Addr == "" {
		dir := cfg.Dir
		if dir == "" {
			tmp, err := os.MkdirTemp("", "dfsmr-bench")
			if err != nil {
				return Result{}, err
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		}
		var err error
		srvs, err = startServers(ctx, cfg, dir)
		defer func() {
			for _, s := range slices.Backward(srvs) {
				s.Stop(context.WithoutCancel(ctx))
			}
		}()
		if err != nil {
			return Result{}, err
		}
		addrs = addrs[:0]
		for _, s := range srvs {
			addrs = append(addrs, s.Addr())
		}
	}
	lat := &latencies{}
	var cs []*client.Client
	for _, addr := range addrs {
		c, err := client.Dial(addr, grpc.WithChainUnaryInterceptor(lat.interceptor))
		if err != nil {
			return Result{}, err
		}
		defer c.Close()
		cs = append(cs, c)
	}
	leader := 0
	if len(cs) > 1 {
		var err error
		if leader, err = awaitCluster(ctx, cs, addrs); err != nil {
			return Result{}, err
		}
		if cfg.Via == ViaLeader {
			cs = []*client.Client{cs[leader]}
		}
	}
	lc := cs[0] // the leader's client, or the only one
	if len(cs) > 1 {
		lc = cs[leader]
	}

	if _, err := lc.Machines.DefineMachine(ctx, &pb.DefineMachineRequest{Source: machineYAML, FileName: "bench.yaml"}); err != nil {
		return Result{}, fmt.Errorf("define %s: %w", Machine, err)
	}
	prefix := fmt.Sprintf("bench-%d-", time.Now().UnixNano())
	if err := startAll(ctx, cs, prefix, cfg.Instances, cfg.Workers); err != nil {
		return Result{}, err
	}
	pairs, err := baseline(ctx, cs, cfg.Workers, cfg.Baseline)
	if err != nil {
		return Result{}, fmt.Errorf("baseline: %w", err)
	}

	var before store.Stats
	if srvs != nil {
		before = srvs[leader].StoreStats()
	}
	lat.reset()
	total := cfg.Instances * steps
	begin := time.Now()
	switch cfg.Mode {
	case ModePerCall:
		err = perCall(ctx, cs, cfg.Workers, total)
	case ModeBatchedReady, ModeBatched, ModeContinue, ModeRefill:
		err = batched(ctx, cs, cfg, total)
	}
	elapsed := time.Since(begin)
	if err != nil {
		return Result{}, err
	}
	r := Result{
		Mode: cfg.Mode, Nodes: cfg.Nodes, Instances: cfg.Instances, Workers: cfg.Workers,
		Steps: lat.count(), Seconds: elapsed.Seconds(), ReadyCalls: int(lat.readies.Load()),
		BaselinePairsPerS: pairs,
	}
	if cfg.Nodes > 1 {
		r.Via = cfg.Via
	}
	r.StepsPerS = float64(r.Steps) / r.Seconds
	r.Ratio = r.StepsPerS / r.BaselinePairsPerS
	r.P50Ms, r.P99Ms = lat.quantile(0.50), lat.quantile(0.99)
	if srvs != nil {
		after := srvs[leader].StoreStats()
		commits := float64(after.Commits - before.Commits)
		r.CommitsPerS = commits / r.Seconds
		r.FsyncsPerS = float64(after.Syncs-before.Syncs) / r.Seconds
		r.OpsPerCommit = float64(after.Ops-before.Ops) / math.Max(1, commits)
	}
	r.Completed, err = completed(ctx, lc, prefix)
	return r, err
}

// startServers starts cfg.Nodes servers in dir: one alone, or a cluster on
// loopback whose servers all bootstrap it with the same peers (so that
// they run raft's default timeouts: a server that bootstrapped alone and
// was joined later leads with the short timeouts of a server alone). It
// returns those it started, also on error.
func startServers(ctx context.Context, cfg Config, dir string) ([]*server.Server, error) {
	if cfg.Nodes == 1 {
		srv, err := server.New(ctx, server.Config{Addr: "127.0.0.1:0", DB: filepath.Join(dir, "bench.db"), NoBundled: true, RateLimit: noRateLimit, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		if err := srv.Start(ctx, nil); err != nil {
			return nil, err
		}
		return []*server.Server{srv}, nil
	}
	raftAddrs := make([]string, cfg.Nodes)
	peers := make([]string, cfg.Nodes)
	for i := range cfg.Nodes {
		addr, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		raftAddrs[i] = addr
		peers[i] = fmt.Sprintf("n%d=%s", i+1, addr)
	}
	var srvs []*server.Server
	for i := range cfg.Nodes {
		srv, err := server.New(ctx, server.Config{
			Addr: "127.0.0.1:0", DB: filepath.Join(dir, fmt.Sprintf("node%d.db", i+1)), NoBundled: true, RateLimit: noRateLimit, Logger: cfg.Logger,
			NodeID: fmt.Sprintf("n%d", i+1), RaftAddr: raftAddrs[i], BootstrapPeers: strings.Join(peers, ","),
		})
		if err != nil {
			return srvs, err
		}
		if err := srv.Start(ctx, nil); err != nil {
			return srvs, err
		}
		srvs = append(srvs, srv)
	}
	return srvs, nil
}

// noRateLimit turns off the in-process servers' per-client rate limit: all
// the load comes from one address, and the baseline's health checks would
// otherwise be capped by the limit rather than by the server.
const noRateLimit = -1

// freeLoopbackAddr returns a loopback address nothing listens on now.
func freeLoopbackAddr() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}

// clusterWait bounds how long a cluster takes to form.
const clusterWait = time.Minute

// awaitCluster waits until every server of cs sees all of them as members
// and the same leader, with its gRPC address (where followers forward
// writes), and returns the index of the leader. addrs are the servers'
// gRPC addresses, in the order of cs.
func awaitCluster(ctx context.Context, cs []*client.Client, addrs []string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, clusterWait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		leader, err := clusterLeader(ctx, cs, addrs)
		if err == nil {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("the cluster did not form: %w", err)
		case <-tick.C:
		}
	}
}

// clusterLeader returns the index of the leader in cs when every server
// agrees on the members and the leader's gRPC address.
func clusterLeader(ctx context.Context, cs []*client.Client, addrs []string) (int, error) {
	leaderAddr := ""
	for _, c := range cs {
		resp, err := c.Cluster.Members(ctx, &pb.MembersRequest{})
		if err != nil {
			return 0, err
		}
		ms := resp.GetMembers()
		if len(ms) != len(cs) {
			return 0, fmt.Errorf("%d of %d members", len(ms), len(cs))
		}
		i := slices.IndexFunc(ms, func(m *pb.Member) bool { return m.GetLeader() })
		switch {
		case i < 0 || ms[i].GetGrpcAddress() == "":
			return 0, errors.New("no leader with a recorded gRPC address yet")
		case leaderAddr != "" && leaderAddr != ms[i].GetGrpcAddress():
			return 0, errors.New("no agreed leader yet")
		}
		leaderAddr = ms[i].GetGrpcAddress()
	}
	if i := slices.Index(addrs, leaderAddr); i >= 0 {
		return i, nil
	}
	return 0, fmt.Errorf("the leader's address %s is none of the servers'", leaderAddr)
}

// startAll starts n instances of Machine with ids prefix+number, with w
// concurrent callers spread over cs.
func startAll(ctx context.Context, cs []*client.Client, prefix string, n, w int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, w)
	for i := range w {
		c := cs[i%len(cs)]
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				_, err := c.Instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprintf("%s%07d", prefix, i), Machine: Machine})
				if err != nil {
					errs <- fmt.Errorf("start instance: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// baseline runs w goroutines that each call the health service's Check (a
// unary RPC that reads one map entry: the cheapest call the server has)
// for d, spread over cs, and returns the rate of pairs of calls.
func baseline(ctx context.Context, cs []*client.Client, w int, d time.Duration) (float64, error) {
	var calls atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, w)
	begin := time.Now()
	stop := time.AfterFunc(d, cancel)
	defer stop.Stop()
	for i := range w {
		h := healthpb.NewHealthClient(cs[i%len(cs)].Conn())
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := h.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				calls.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(calls.Load()) / 2 / elapsed.Seconds(), nil
}

// perCall runs w goroutines that each lease one instance of Machine and
// report it, until total steps are reported; worker i uses cs[i%len(cs)].
func perCall(ctx context.Context, cs []*client.Client, w, total int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var done atomic.Int64
	var wg sync.WaitGroup
	for i := range w {
		name := fmt.Sprintf("bench-%d", i)
		c := cs[i%len(cs)]
		wg.Go(func() {
			for ctx.Err() == nil {
				r, err := c.Work.Ready(ctx, &pb.ReadyRequest{Worker: name, Machine: Machine, Wait: durationpb.New(time.Second)})
				if err != nil {
					if ctx.Err() == nil {
						cancel(fmt.Errorf("ready: %w", err))
					}
					return
				}
				in := r.GetInstance()
				if in == nil {
					continue
				}
				_, err = c.Work.Transition(ctx, &pb.TransitionRequest{Id: in.GetId(), Token: in.GetLease().GetToken(), Transition: "ok"})
				if err != nil {
					cancel(fmt.Errorf("transition: %w", err))
					return
				}
				if done.Add(1) == int64(total) {
					cancel(nil)
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// batched runs a client.Worker on each client of cs, with cfg.Workers
// handler slots in all and a no-op handler on each node of Machine, until
// total steps are reported.
func batched(ctx context.Context, cs []*client.Client, cfg Config, total int) error {
	var handled atomic.Int64
	all := make(chan struct{})
	var ws []*client.Worker
	for i, c := range cs {
		slots := cfg.Workers / len(cs)
		if i < cfg.Workers%len(cs) {
			slots++
		}
		if slots == 0 {
			continue
		}
		w := client.NewWorker(c, client.WorkerOptions{
			Name: fmt.Sprintf("bench-%d", i), Concurrency: slots, Batch: min(cfg.Batch, slots), Pollers: cfg.Pollers,
			Poll: time.Second, UnaryTransitions: cfg.Mode == ModeBatchedReady, Continue: cfg.Mode == ModeContinue || cfg.Mode == ModeRefill, Refill: cfg.Mode == ModeRefill, Logger: cfg.Logger,
		})
		for _, n := range nodes {
			w.Handle(Machine, n, func(context.Context, *pb.Instance) (client.Result, error) {
				if handled.Add(1) == int64(total) {
					close(all)
				}
				return client.Result{Transition: "ok"}, nil
			})
		}
		ws = append(ws, w)
	}
	var errs []error
	for _, w := range ws {
		if err := w.Start(ctx); err != nil {
			errs = append(errs, err)
			break
		}
	}
	if len(errs) == 0 {
		select {
		case <-all:
		case <-ctx.Done():
		}
	}
	// Stop drains: the last handlers' transitions are reported before it
	// returns.
	var reported uint64
	for _, w := range ws {
		if err := w.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
		reported += w.Stats().Reported
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if reported != uint64(total) {
		return fmt.Errorf("workers reported %d of %d steps", reported, total)
	}
	return nil
}

// completed counts the instances of this run in Machine's final node.
func completed(ctx context.Context, c *client.Client, prefix string) (int, error) {
	list, err := c.ListAllInstances(ctx, &pb.ListInstancesRequest{Machine: Machine, Status: pb.InstanceStatus_INSTANCE_STATUS_FINAL}, 0)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, in := range list {
		if strings.HasPrefix(in.GetId(), prefix) && in.GetNode() == "done" {
			n++
		}
	}
	return n, nil
}

// latencies records, for every step accepted by a Transition or
// TransitionBatch call on the connection, the duration of its call.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
	// readies counts Ready calls that leased work.
	readies atomic.Int64
}

func (l *latencies) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method != pb.WorkService_Transition_FullMethodName && method != pb.WorkService_TransitionBatch_FullMethodName {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if r, ok := reply.(*pb.ReadyResponse); ok && err == nil && len(r.GetInstances()) > 0 {
			l.readies.Add(1)
		}
		return err
	}
	begin := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err != nil {
		return err
	}
	// Every accepted step counts once, with its call's latency.
	d := time.Since(begin)
	n := 1
	if r, ok := reply.(*pb.TransitionBatchResponse); ok {
		n = 0
		for _, res := range r.GetResults() {
			if res.GetCode() == 0 {
				n++
			}
		}
	}
	l.mu.Lock()
	for range n {
		l.d = append(l.d, d)
	}
	l.mu.Unlock()
	return nil
}

func (l *latencies) reset() {
	l.mu.Lock()
	l.d = l.d[:0]
	l.mu.Unlock()
	l.readies.Store(0)
}

func (l *latencies) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

// quantile returns the q-quantile in milliseconds.
func (l *latencies) quantile(q float64) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	slices.Sort(l.d)
	i := min(int(q*float64(len(l.d))), len(l.d)-1)
	return float64(l.d[i]) / float64(time.Millisecond)
}
