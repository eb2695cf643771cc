package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/printersim"
	"github.com/dfsmr/dfsmr/internal/tcpproxy"
)

var flagClusterDuration = flag.Duration("cluster.duration", 0,
	"run TestClusterFaults' rounds of faults for this long; 0: one round of each fault")

// maxFailover is the longest a three-server cluster on loopback may go
// without a leader once its leader is killed, with the default timeouts.
const maxFailover = 2 * time.Second

// TestClusterFaults runs three dfsmrd processes as one cluster, their raft
// traffic through proxies the test controls, under load from concurrent
// clients of every server, workers and printers, and injects faults in
// rounds: kill -9 of the leader (timed: a new leader within maxFailover),
// the leader cut off from the others by its proxies, kill -9 of a follower
// (the deposed leader), a follower stopped (SIGSTOP) past the election
// timeout. Each fault heals (restart, proxies healed, SIGCONT) and is
// followed by checks once the cluster settled: every acknowledged start
// and order on every server, the changelog gap-free and byte-identical on
// every server, no transition applied twice and every acknowledged one
// applied, the client history linearizable. At last a fourth server joins
// the loaded cluster, restores a snapshot and catches up to the same
// changelog.
func TestClusterFaults(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	cl := newCluster(t, 3)
	ld := &clusterLoad{t: t, cl: cl, base: time.Now(), seed: seed, starts: map[string]bool{}, transitions: map[string]uint64{}, orders: map[string]bool{}}
	faults := []struct {
		name string
		run  func(ph *phase)
	}{
		{"kill -9 leader", func(ph *phase) { cl.killLeader(ph, rng) }},
		{"partition leader", func(ph *phase) { cl.partitionLeader(ph, rng) }},
		{"kill -9 follower", func(ph *phase) { cl.killFollower(ph, rng) }},
		{"SIGSTOP follower", func(ph *phase) { cl.stopFollower(ph, rng) }},
	}
	began := time.Now()
	for round := 0; round == 0 || time.Since(began) < *flagClusterDuration; round++ {
		for _, f := range faults {
			ph := ld.begin(f.name)
			f.run(ph)
			ld.end(ph)
			ld.check()
			ld.faults++
			if t.Failed() {
				t.FailNow()
			}
		}
	}
	ph := ld.begin("join")
	cl.join(ph, rng)
	ld.end(ph)
	ld.check()
	// The servers snapshot every 256 entries and keep 64 behind: the
	// joiner's log starts past the others' first entries, so it restores
	// a snapshot.
	joiner := cl.nodes[len(cl.nodes)-1]
	b, err := os.ReadFile(joiner.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`msg="Installed remote snapshot"`)) {
		t.Errorf("%s caught up without restoring a snapshot", joiner.id)
	}
	cl.dialsNotItself()
	ld.report(time.Since(began))
}

// node is one dfsmrd child process and how to start it again.
type node struct {
	id       string
	grpcAddr string
	raftAddr string
	args     []string
	logPath  string
	proc     *os.Process
	exited   chan struct{} // closed once the process is reaped; nil: never started
	c        *client.Client
}

func (nd *node) running() bool {
	if nd.exited == nil {
		return false
	}
	select {
	case <-nd.exited:
		return false
	default:
		return true
	}
}

// cluster is the test's servers and the proxies between them: dial[i][j]
// forwards node i's raft connections to node j.
type cluster struct {
	t     *testing.T
	dir   string
	nodes []*node
	dial  [][]*tcpproxy.Proxy
	// stopped is the node held by SIGSTOP, if any: calls to it hang.
	stopped *node
	// deposed is the index of the last leader killed or cut off, or -1.
	// Back as a follower, it dropped the entries it had appended but not
	// committed (raft truncates the log's tail): killFollower restarts it
	// once more, which reads that log again.
	deposed int

	kills, partitions []time.Duration // time to a new leader
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// newCluster starts n servers that bootstrap one cluster, each dialing
// the others through a proxy, and waits for a leader.
func newCluster(t *testing.T, n int) *cluster {
	cl := &cluster{t: t, dir: t.TempDir(), deposed: -1}
	var peers []string
	for i := range n {
		nd := &node{id: fmt.Sprintf("n%d", i+1), grpcAddr: freeAddr(t), raftAddr: freeAddr(t)}
		cl.nodes = append(cl.nodes, nd)
		peers = append(peers, nd.id+"="+nd.raftAddr)
	}
	cl.dial = make([][]*tcpproxy.Proxy, n)
	for i, nd := range cl.nodes {
		cl.dial[i] = make([]*tcpproxy.Proxy, n)
		var dial []string
		for j, to := range cl.nodes {
			if i == j {
				continue
			}
			p, err := tcpproxy.New(to.raftAddr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			cl.dial[i][j] = p
			dial = append(dial, to.id+"="+p.Addr())
		}
		nd.args = cl.nodeArgs(nd, "--bootstrap-peers", strings.Join(peers, ","), "--raft-dial", strings.Join(dial, ","))
	}
	t.Cleanup(cl.stopAll)
	for _, nd := range cl.nodes {
		cl.start(nd)
	}
	cl.waitLeader(-1)
	// The leader defines the bundled machines once it leads.
	for _, nd := range cl.nodes {
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, err := nd.c.Machines.GetMachine(context.Background(), &pb.GetMachineRequest{Id: "report"})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: machine report: %v", nd.id, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("servers (grpc, raft): %v", func() (s []string) {
		for _, nd := range cl.nodes {
			s = append(s, fmt.Sprintf("%s %s %s", nd.id, nd.grpcAddr, nd.raftAddr))
		}
		return s
	}())
	return cl
}

// nodeArgs returns nd's dfsmrd arguments, its files in the test's
// directory, then extra.
func (cl *cluster) nodeArgs(nd *node, extra ...string) []string {
	nd.logPath = filepath.Join(cl.dir, nd.id+".log")
	return append([]string{
		"--addr", nd.grpcAddr, "--db", filepath.Join(cl.dir, nd.id+".db"),
		"--node-id", nd.id, "--raft-addr", nd.raftAddr, "--raft-dir", filepath.Join(cl.dir, nd.id+".raft"),
		// Snapshots, log compaction and segment rotation every few
		// seconds of load, so that faults strike them too, followers
		// that were down catch up from snapshots, and the joiner does.
		"--raft-snapshot-threshold", "256", "--raft-snapshot-interval", "500ms",
		"--raft-trailing-logs", "64", "--raft-segment-size", "65536",
	}, extra...)
}

// start runs nd's process and returns once it serves gRPC. A server
// forms the cluster only once a quorum is up: start does not wait for a
// leader.
func (cl *cluster) start(nd *node) {
	cl.t.Helper()
	logf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		cl.t.Fatal(err)
	}
	serving := make(chan struct{}, 1)
	cmd := exec.Command(os.Args[0], nd.args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = &lineWatch{w: logf, match: []byte("msg=serving "), found: serving}
	if err := cmd.Start(); err != nil {
		logf.Close()
		cl.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	nd.proc, nd.exited = cmd.Process, exited
	select {
	case <-serving:
	case <-exited:
		cl.t.Fatalf("%s exited before serving:\n%s", nd.id, tail(nd.logPath, 40))
	case <-time.After(30 * time.Second):
		cl.t.Fatalf("%s did not serve in 30s:\n%s", nd.id, tail(nd.logPath, 40))
	}
	if nd.c == nil {
		c, err := client.Dial(nd.grpcAddr)
		if err != nil {
			cl.t.Fatal(err)
		}
		nd.c = c
	}
}

// kill sends nd SIGKILL and waits until it is gone.
func (cl *cluster) kill(nd *node) {
	cl.t.Helper()
	if err := nd.proc.Signal(syscall.SIGKILL); err != nil {
		cl.t.Fatalf("kill %s: %v", nd.id, err)
	}
	<-nd.exited
}

// stopAll kills every server still running, and closes the clients; on
// failure it shows the end of every server's log.
func (cl *cluster) stopAll() {
	for _, nd := range cl.nodes {
		if nd.running() {
			nd.proc.Signal(syscall.SIGKILL)
			<-nd.exited
		}
		if nd.c != nil {
			nd.c.Close()
		}
		if cl.t.Failed() && nd.logPath != "" {
			keep := filepath.Join(os.TempDir(), fmt.Sprintf("dfsmr-cluster-%s-%s.log", cl.t.Name(), nd.id))
			if b, err := os.ReadFile(nd.logPath); err == nil && os.WriteFile(keep, b, 0o600) == nil {
				cl.t.Logf("%s's log: %s", nd.id, keep)
			}
		}
	}
}

// state returns node i's raft state, or UNSPECIFIED if it does not answer
// at once.
func (cl *cluster) state(i int) pb.RaftState {
	nd := cl.nodes[i]
	if !nd.running() || nd == cl.stopped {
		return pb.RaftState_RAFT_STATE_UNSPECIFIED
	}
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	resp, err := nd.c.Cluster.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return pb.RaftState_RAFT_STATE_UNSPECIFIED
	}
	return resp.GetServer().GetState()
}

// waitLeader polls the servers but not one (-1: none) until one of them
// says it leads, and returns its index.
func (cl *cluster) waitLeader(not int) int {
	cl.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for i := range cl.nodes {
			if i != not && cl.state(i) == pb.RaftState_RAFT_STATE_LEADER {
				return i
			}
		}
		if time.Now().After(deadline) {
			cl.t.Fatalf("no leader in 20s (but %d)", not)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// follower returns the deposed server if it follows, else a random
// server other than the leader.
func (cl *cluster) follower(rng *rand.Rand) int {
	leader := cl.waitLeader(-1)
	if cl.deposed >= 0 && cl.deposed != leader {
		return cl.deposed
	}
	return (leader + 1 + rng.IntN(len(cl.nodes)-1)) % len(cl.nodes)
}

// pause lets the load run a random little while, so that faults strike
// with calls in flight at varied moments.
func pause(rng *rand.Rand) { time.Sleep(time.Duration(rng.IntN(250)) * time.Millisecond) }

// faultFor is how long a fault lasts: past the election timeout, longer
// and varied in a long run.
func faultFor(rng *rand.Rand) time.Duration {
	d := 2500 * time.Millisecond
	if *flagClusterDuration > 0 {
		d += time.Duration(rng.IntN(3000)) * time.Millisecond
	}
	return d
}

func (cl *cluster) killLeader(ph *phase, rng *rand.Rand) {
	ph.progress()
	pause(rng)
	leader := cl.waitLeader(-1)
	killed := time.Now()
	cl.kill(cl.nodes[leader])
	cl.deposed = leader
	next := cl.waitLeader(leader)
	took := time.Since(killed)
	cl.kills = append(cl.kills, took)
	cl.t.Logf("killed leader %s: %s leads after %v", cl.nodes[leader].id, cl.nodes[next].id, took)
	if took > maxFailover {
		cl.t.Errorf("a new leader %v after the leader was killed, want at most %v", took, maxFailover)
	}
	// The load carries on at the new leader, the old one down.
	ph.progress()
	cl.start(cl.nodes[leader])
	ph.progress()
}

func (cl *cluster) killFollower(ph *phase, rng *rand.Rand) {
	ph.progress()
	pause(rng)
	f := cl.follower(rng)
	cl.kill(cl.nodes[f])
	down := time.Now()
	ph.progress()
	time.Sleep(faultFor(rng) - time.Since(down))
	cl.start(cl.nodes[f])
	ph.progress()
}

func (cl *cluster) stopFollower(ph *phase, rng *rand.Rand) {
	ph.progress()
	pause(rng)
	f := cl.nodes[cl.follower(rng)]
	if err := f.proc.Signal(syscall.SIGSTOP); err != nil {
		cl.t.Fatal(err)
	}
	cl.stopped = f
	stopped := time.Now()
	ph.progress()
	time.Sleep(faultFor(rng) - time.Since(stopped))
	if err := f.proc.Signal(syscall.SIGCONT); err != nil {
		cl.t.Fatal(err)
	}
	cl.stopped = nil
	ph.progress()
}

// cut cuts (or heals) every proxy to and from node i.
func (cl *cluster) cut(i int, cut bool) {
	for j := range cl.nodes {
		for _, p := range []*tcpproxy.Proxy{cl.dial[i][j], cl.dial[j][i]} {
			switch {
			case p == nil:
			case cut:
				p.Cut()
			default:
				p.Heal()
			}
		}
	}
}

func (cl *cluster) partitionLeader(ph *phase, rng *rand.Rand) {
	ph.progress()
	pause(rng)
	leader := cl.waitLeader(-1)
	cut := time.Now()
	cl.cut(leader, true)
	cl.deposed = leader
	next := cl.waitLeader(leader)
	took := time.Since(cut)
	cl.partitions = append(cl.partitions, took)
	cl.t.Logf("cut leader %s off: %s leads after %v", cl.nodes[leader].id, cl.nodes[next].id, took)
	ph.progress()
	time.Sleep(faultFor(rng) - time.Since(cut))
	cl.cut(leader, false)
	ph.progress()
}

// join starts a fourth server that joins the loaded cluster through a
// random member, and waits until the members list it.
func (cl *cluster) join(ph *phase, rng *rand.Rand) {
	ph.progress()
	via := cl.nodes[rng.IntN(len(cl.nodes))]
	nd := &node{id: fmt.Sprintf("n%d", len(cl.nodes)+1), grpcAddr: freeAddr(cl.t), raftAddr: freeAddr(cl.t)}
	nd.args = cl.nodeArgs(nd, "--join", via.grpcAddr)
	cl.nodes = append(cl.nodes, nd)
	cl.start(nd)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := nd.c.Cluster.Members(context.Background(), &pb.MembersRequest{})
		if err == nil && slices.ContainsFunc(resp.GetMembers(), func(m *pb.Member) bool { return m.GetId() == nd.id }) {
			break
		}
		if time.Now().After(deadline) {
			cl.t.Fatalf("%s joined through %s is not a member after 30s: %v, %v", nd.id, via.id, resp.GetMembers(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cl.t.Logf("%s joined through %s", nd.id, via.id)
	ph.progress()
}

// dialsNotItself checks that no server looked itself up in its --raft-dial
// map: raft encodes a server's own address into every request it sends,
// through the same lookup, and a miss there logged a warning each time.
func (cl *cluster) dialsNotItself() {
	for _, nd := range cl.nodes {
		b, err := os.ReadFile(nd.logPath)
		if err != nil {
			cl.t.Fatal(err)
		}
		n := 0
		for line := range strings.Lines(string(b)) {
			if strings.Contains(line, `msg="unable to get address for server`) && strings.Contains(line, " id="+nd.id+" ") {
				n++
			}
		}
		if n > 0 {
			cl.t.Errorf("%s warned %d times that it has no dial address for itself", nd.id, n)
		}
	}
}

// lineWatch copies a child's log to w and signals found once a line
// holds match.
type lineWatch struct {
	w     io.Writer
	match []byte
	found chan struct{}
	line  []byte
}

func (l *lineWatch) Write(p []byte) (int, error) {
	l.w.Write(p)
	if l.match == nil {
		return len(p), nil
	}
	l.line = append(l.line, p...)
	for {
		i := bytes.IndexByte(l.line, '\n')
		if i < 0 {
			return len(p), nil
		}
		if bytes.Contains(l.line[:i], l.match) {
			l.found <- struct{}{}
			l.match, l.line = nil, nil
			return len(p), nil
		}
		l.line = l.line[i+1:]
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// clusterLoad drives the cluster from concurrent clients and keeps the history
// of their calls for porcupine, and what was acknowledged.
type clusterLoad struct {
	t    *testing.T
	cl   *cluster
	base time.Time
	seed uint64
	ids  atomic.Int64
	acks atomic.Int64 // acknowledged starts and transitions

	mu          sync.Mutex
	ops         []porcupine.Operation
	clientIDs   int
	starts      map[string]bool   // acknowledged
	transitions map[string]uint64 // instance -> token of its acknowledged "ok"
	tried       struct{ starts, leases, transitions, linearizableGets, leaderGets, orders int }
	ambiguous   int

	orders map[string]bool // acknowledged orders
	// fleet is the simulated printers, each connected to a server (another
	// in every phase) with an operator that takes the parts off; printed
	// counts their finished prints.
	fleet   *printersim.Fleet
	printed atomic.Int64
	phases  int

	faults   int
	reported uint64 // transitions the client.Workers reported
	// aborted ends the loaders' retries when the test fails.
	aborted atomic.Bool
}

// loaders is how many goroutines start and move instances at once.
const loaders = 6

// phase is the load during one fault.
type phase struct {
	ld      *clusterLoad
	name    string
	stop    chan struct{}
	wg      sync.WaitGroup
	devices context.CancelFunc // ends the printers and the operator
	printed int64              // ld.printed when the phase began
	workers []*client.Worker

	once     sync.Once
	reported uint64
}

// begin starts the load: loaders that start instances, lease them at
// "downloadable" and move them on, on random servers; and a client.Worker
// on every server that moves "uploadable" instances to completed.
func (ld *clusterLoad) begin(name string) *phase {
	ph := &phase{ld: ld, name: name, stop: make(chan struct{})}
	// A test that fails midway stops the load before the servers.
	ld.t.Cleanup(func() {
		ld.aborted.Store(true)
		ph.halt(false)
	})
	nodes := slices.Clone(ld.cl.nodes)
	for g := range loaders {
		ph.wg.Go(func() { ld.run(ph, nodes, g) })
	}
	ld.printers(ph, nodes)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, nd := range nodes {
		w := client.NewWorker(nd.c, client.WorkerOptions{
			Name: "worker-" + nd.id, Concurrency: 4, Poll: time.Second, CallTimeout: 2 * time.Second, Logger: quiet,
		})
		w.Handle("report", "uploadable", func(context.Context, *pb.Instance) (client.Result, error) {
			return client.Result{Transition: "ok"}, nil
		})
		if err := w.Start(context.Background()); err != nil {
			ld.t.Fatal(err)
		}
		ph.workers = append(ph.workers, w)
	}
	return ph
}

// printers runs the fleet, printer i connected to server i + phase
// number, and an operator that follows the changelog of one server (the
// next one whenever its stream ends), until the phase ends.
func (ld *clusterLoad) printers(ph *phase, nodes []*node) {
	if ld.fleet == nil {
		ld.fleet = printersim.NewFleet("printer-", 3, printersim.Profile{PrintTime: 300 * time.Millisecond}, ld.seed)
	}
	ld.phases++
	ph.printed = ld.printed.Load()
	ctx, cancel := context.WithCancel(context.Background())
	ph.devices = cancel
	shift := ld.phases
	ph.wg.Go(func() {
		ld.fleet.Run(ctx, printersim.Link{}, func(i int) printersim.Link {
			return printersim.Link{
				Client: nodes[(i+shift)%len(nodes)].c, Pool: "lab", ReconnectDelay: 100 * time.Millisecond,
				OnEvent: func(e printersim.Event) {
					if e.Kind == printersim.EventFinished {
						ld.printed.Add(1)
					}
				},
			}
		})
	})
	ph.wg.Go(func() {
		for k := shift; ctx.Err() == nil; k++ {
			op := &printersim.Operator{Client: nodes[k%len(nodes)].c, FromSeq: 1, Rand: rand.New(rand.NewPCG(ld.seed, uint64(k)))}
			op.Run(ctx)
			sleep(ctx, 100*time.Millisecond)
		}
	})
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// progress waits until the load had 5 more calls acknowledged.
func (ph *phase) progress() {
	ph.ld.t.Helper()
	want := ph.ld.acks.Load() + 5
	deadline := time.Now().Add(30 * time.Second)
	for ph.ld.acks.Load() < want {
		if time.Now().After(deadline) {
			ph.ld.t.Fatalf("%s: the load made no progress in 30s", ph.name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// end stops the load: the loaders finish their calls in flight (retrying
// for a while), the workers drain.
func (ld *clusterLoad) end(ph *phase) {
	// The printers carry on: one finishes a print before the phase ends.
	deadline := time.Now().Add(30 * time.Second)
	for ld.printed.Load() == ph.printed {
		if time.Now().After(deadline) {
			ld.t.Errorf("%s: the printers finished no print in 30s", ph.name)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	reported := ph.halt(true)
	ld.reported += reported
	if reported == 0 {
		ld.t.Errorf("%s: the workers reported no transition", ph.name)
	}
}

// halt stops the loaders and the workers, once, and returns how many
// transitions the workers reported. A worker's Stop waits for its
// transitions in flight, which it retries until their leases expire
// (minutes): a test that failed (drain false) with a server down does not
// wait for them.
func (ph *phase) halt(drain bool) uint64 {
	ph.once.Do(func() {
		close(ph.stop)
		ph.devices()
		ph.wg.Wait()
		if !drain {
			for _, w := range ph.workers {
				go w.Stop(context.Background())
			}
			return
		}
		for _, w := range ph.workers {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			w.Stop(ctx)
			cancel()
			ph.reported += w.Stats().Reported
		}
	})
	return ph.reported
}

func (ld *clusterLoad) now() int64 { return int64(time.Since(ld.base)) }

// record adds one call to the history; out nil is a call of unknown
// outcome, which may take effect at any time after it was made.
func (ld *clusterLoad) record(client int, in linIn, out *linOut, call, ret int64) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	if out == nil {
		ld.ambiguous++
		ld.clientIDs++
		client, ret = loaders+ld.clientIDs, math.MaxInt64
	}
	ld.ops = append(ld.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
}

// callTimeout bounds one attempt of a call; retryFor bounds the retries
// of a write whose outcome is unknown, on other servers.
const (
	callTimeout = 2 * time.Second
	retryFor    = 30 * time.Second
)

// run is one loader: until the phase stops, it starts an instance, reads
// it from the leader, leases the next instance at "downloadable" and
// moves it on.
func (ld *clusterLoad) run(ph *phase, nodes []*node, g int) {
	rng := rand.New(rand.NewPCG(ld.seed, uint64(ld.ids.Add(1))))
	for {
		select {
		case <-ph.stop:
			return
		default:
		}
		id := fmt.Sprintf("i%d", ld.ids.Add(1))
		if ld.start(nodes, rng, g, id) && rng.IntN(2) == 0 {
			ld.get(nodes, rng, g, id)
		}
		if id, ok := ld.leaseAndMove(nodes, rng, g); ok {
			ld.get(nodes, rng, g, id)
		}
		if rng.IntN(8) == 0 {
			ld.order(nodes, rng, g)
		}
	}
}

// write calls f on random servers, another one after each failure, until
// classify says the outcome is known (it is told whether an earlier
// attempt's outcome is unknown) or retryFor passed. The attempts are one
// operation in the history, from the first call to the last return: the
// calls are idempotent (an instance id, a request id), so an attempt that
// takes effect after another was answered changes nothing. An operation
// given up has an unknown outcome. It returns the known outcome, or nil.
// A nil in keeps the call out of the history.
func (ld *clusterLoad) write(nodes []*node, rng *rand.Rand, g int, in *linIn, f func(context.Context, *client.Client) error, classify func(err error, retried bool) *linOut) *linOut {
	first, began, k := ld.now(), time.Now(), rng.IntN(len(nodes))
	for retried := false; ; retried = true {
		nd := nodes[k%len(nodes)]
		k++
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		err := f(ctx, nd.c)
		ret := ld.now()
		cancel()
		if out := classify(err, retried); out != nil {
			if in != nil {
				ld.record(g, *in, out, first, ret)
			}
			return out
		}
		if time.Since(began) > retryFor || ld.aborted.Load() {
			if in != nil {
				ld.record(g, *in, nil, first, 0)
			}
			return nil
		}
		time.Sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond)
	}
}

// start starts instance id and reports whether it was acknowledged.
func (ld *clusterLoad) start(nodes []*node, rng *rand.Rand, g int, id string) bool {
	ld.mu.Lock()
	ld.tried.starts++
	ld.mu.Unlock()
	out := ld.write(nodes, rng, g, &linIn{Kind: linStart, ID: id}, func(ctx context.Context, c *client.Client) error {
		_, err := c.Instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "report"})
		return err
	}, func(err error, retried bool) *linOut {
		switch code := status.Code(err); {
		case retried && (code == codes.OK || code == codes.AlreadyExists):
			// An earlier attempt may have started it.
			return &linOut{Any: true}
		case code == codes.OK:
			return &linOut{OK: true}
		case code == codes.AlreadyExists:
			return &linOut{}
		case code == codes.InvalidArgument, code == codes.NotFound, code == codes.PermissionDenied:
			ld.t.Errorf("StartInstance %s: %v", id, err)
		}
		return nil
	})
	if out == nil {
		return false
	}
	ld.mu.Lock()
	ld.starts[id] = true
	ld.mu.Unlock()
	ld.acks.Add(1)
	return true
}

// order submits an order of one part for the printers' pool, retried
// until known, and records it if acknowledged.
func (ld *clusterLoad) order(nodes []*node, rng *rand.Rand, g int) {
	id := fmt.Sprintf("o%d", ld.ids.Add(1))
	ld.mu.Lock()
	ld.tried.orders++
	ld.mu.Unlock()
	out := ld.write(nodes, rng, g, nil, func(ctx context.Context, c *client.Client) error {
		_, err := c.Devices.SubmitOrder(ctx, &pb.SubmitOrderRequest{OrderId: id, Model: "benchy", Quantity: 1, Pool: "lab"})
		return err
	}, func(err error, retried bool) *linOut {
		switch code := status.Code(err); {
		case code == codes.OK, retried && code == codes.AlreadyExists:
			return &linOut{OK: true}
		case code != codes.Unavailable && code != codes.DeadlineExceeded && code != codes.Canceled:
			ld.t.Errorf("SubmitOrder %s: %v", id, err)
			return &linOut{}
		}
		return nil
	})
	if out == nil || !out.OK {
		return
	}
	ld.mu.Lock()
	ld.orders[id] = true
	ld.mu.Unlock()
}

// leaseAndMove leases one instance at "downloadable" and reports its "ok"
// with a request id, retried until known. It returns the instance and
// whether the transition was acknowledged. A Ready whose reply was lost
// is not in the history: the instance it may have leased stays leased
// for the node's 10m timeout, which no other call observes.
func (ld *clusterLoad) leaseAndMove(nodes []*node, rng *rand.Rand, g int) (string, bool) {
	nd := nodes[rng.IntN(len(nodes))]
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	call := ld.now()
	r, err := nd.c.Work.Ready(ctx, &pb.ReadyRequest{Worker: fmt.Sprintf("loader-%d", g), Machine: "report", Node: "downloadable"})
	ret := ld.now()
	cancel()
	if err != nil || r.GetLease() == nil {
		return "", false
	}
	id, tok := r.GetInstance().GetId(), r.GetLease().GetToken()
	ld.record(g, linIn{Kind: linLease, ID: id, Token: tok}, &linOut{OK: true}, call, ret)
	ld.mu.Lock()
	ld.tried.leases++
	ld.tried.transitions++
	ld.mu.Unlock()
	req := &pb.TransitionRequest{Id: id, Token: tok, Transition: "ok", RequestId: fmt.Sprintf("loader-%d/%d", g, tok)}
	out := ld.write(nodes, rng, g, &linIn{Kind: linTransition, ID: id, Token: tok}, func(ctx context.Context, c *client.Client) error {
		_, err := c.Work.Transition(ctx, req)
		return err
	}, func(err error, _ bool) *linOut {
		switch status.Code(err) {
		case codes.OK:
			return &linOut{OK: true}
		case codes.Aborted, codes.FailedPrecondition, codes.NotFound:
			return &linOut{}
		case codes.InvalidArgument, codes.PermissionDenied:
			ld.t.Errorf("Transition %s: %v", id, err)
		}
		return nil
	})
	if out == nil || !out.OK {
		return id, false
	}
	ld.mu.Lock()
	ld.transitions[id] = tok
	ld.mu.Unlock()
	ld.acks.Add(1)
	return id, true
}

// get reads instance id from a random server: half the time a
// linearizable read (the request header), else a plain read if that
// server says it leads. A follower answers plain reads from its own copy,
// which may lag (that is its contract), so plain reads from followers are
// not in the history; the leader's copy holds every acknowledged write.
func (ld *clusterLoad) get(nodes []*node, rng *rand.Rand, g int, id string) {
	nd := nodes[rng.IntN(len(nodes))]
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	linearizable := rng.IntN(2) == 0
	if linearizable {
		ctx = metadata.AppendToOutgoingContext(ctx, client.ConsistencyHeader, client.LinearizableRead)
	} else {
		st, err := nd.c.Cluster.Status(ctx, &pb.StatusRequest{})
		if err != nil || st.GetServer().GetState() != pb.RaftState_RAFT_STATE_LEADER {
			return
		}
	}
	call := ld.now()
	resp, err := nd.c.Instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: id})
	ret := ld.now()
	var out *linOut
	switch status.Code(err) {
	case codes.OK:
		out = &linOut{OK: true, Node: resp.GetInstance().GetNode()}
	case codes.NotFound:
		out = &linOut{}
	default:
		return // a read that failed changed nothing
	}
	ld.mu.Lock()
	if linearizable {
		ld.tried.linearizableGets++
	} else {
		ld.tried.leaderGets++
	}
	ld.mu.Unlock()
	ld.record(g, linIn{Kind: linGet, ID: id}, out, call, ret)
}

// changelog reads every change nd has, up to its head, each marshalled
// deterministically.
func changelog(nd *node) ([]*pb.Change, [][]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := nd.c.Changes.Changes(ctx, &pb.ChangesRequest{FromSeq: 1, StopAtHead: true})
	if err != nil {
		return nil, nil, err
	}
	var changes []*pb.Change
	var raw [][]byte
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return changes, raw, nil
		}
		if err != nil {
			return nil, nil, err
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(resp.GetChange())
		if err != nil {
			return nil, nil, err
		}
		changes = append(changes, resp.GetChange())
		raw = append(raw, b)
	}
}

// sameChangelog waits until every server serves the same changelog and
// returns it.
func (ld *clusterLoad) sameChangelog() []*pb.Change {
	t := ld.t
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var first []*pb.Change
		var want [][]byte
		same, why := true, ""
		for i, nd := range ld.cl.nodes {
			changes, raw, err := changelog(nd)
			switch {
			case err != nil:
				same, why = false, fmt.Sprintf("%s: %v", nd.id, err)
			case i == 0:
				first, want = changes, raw
			case !slices.EqualFunc(raw, want, bytes.Equal):
				same = false
				at := 0
				for at < min(len(raw), len(want)) && bytes.Equal(raw[at], want[at]) {
					at++
				}
				why = fmt.Sprintf("%s has %d changes, %s %d; first difference at position %d", nd.id, len(raw), ld.cl.nodes[0].id, len(want), at)
			}
			if !same {
				break
			}
		}
		if same {
			return first
		}
		if time.Now().After(deadline) {
			t.Fatalf("the servers' changelogs differ after 30s: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// check runs once the load stopped and the faults healed: every server
// holds the same gap-free changelog, every acknowledged start and
// transition, no start or transition twice, and the history is
// linearizable.
func (ld *clusterLoad) check() {
	t := ld.t
	t.Helper()
	log := ld.sameChangelog()
	type use struct {
		id    string
		token uint64
	}
	startsOf, movesOf := map[string]int{}, map[use]int{}
	for i, ch := range log {
		if ch.GetSeq() != uint64(i+1) {
			t.Fatalf("changelog gap: position %d holds seq %d", i, ch.GetSeq())
		}
		switch {
		case ch.GetKind() == pb.ChangeKind_CHANGE_KIND_STARTED && ch.GetMachine() == "report":
			startsOf[ch.GetInstance()]++
		case ch.GetKind() == pb.ChangeKind_CHANGE_KIND_TRANSITIONED && ch.GetToken() != 0:
			// A transition under a lease (the printers' jobs move
			// without one).
			movesOf[use{ch.GetInstance(), ch.GetToken()}]++
		}
	}
	for id, n := range startsOf {
		if n > 1 {
			t.Errorf("instance %s started %d times", id, n)
		}
	}
	for u, n := range movesOf {
		if n > 1 {
			t.Errorf("instance %s transitioned %d times under token %d", u.id, n, u.token)
		}
	}
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for id, tok := range ld.transitions {
		if movesOf[use{id, tok}] != 1 {
			t.Errorf("acknowledged transition of %s (token %d) is in the changelog %d times", id, tok, movesOf[use{id, tok}])
		}
	}
	for _, nd := range ld.cl.nodes {
		list, err := nd.c.ListAllInstances(context.Background(), &pb.ListInstancesRequest{Machine: "report"}, 0)
		if err != nil {
			t.Fatalf("list on %s: %v", nd.id, err)
		}
		nodeOf := map[string]string{}
		for _, in := range list {
			nodeOf[in.GetId()] = in.GetNode()
		}
		for id := range ld.starts {
			if _, ok := nodeOf[id]; !ok {
				t.Errorf("%s lost the acknowledged start of %s", nd.id, id)
			}
		}
		for id := range ld.transitions {
			if nodeOf[id] == "downloadable" {
				t.Errorf("%s has %s at downloadable, after its acknowledged ok", nd.id, id)
			}
		}
		if len(list) != len(startsOf) {
			t.Errorf("%s lists %d instances, its changelog started %d", nd.id, len(list), len(startsOf))
		}
		for id := range ld.orders {
			resp, err := nd.c.Devices.GetOrder(context.Background(), &pb.GetOrderRequest{OrderId: id})
			if err != nil || len(resp.GetJobs()) != 1 {
				t.Errorf("%s: acknowledged order %s: %d jobs, %v; want 1", nd.id, id, len(resp.GetJobs()), err)
			}
		}
	}
	res, info := porcupine.CheckOperationsVerbose(linModel, ld.ops, time.Minute)
	if res != porcupine.Ok {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("dfsmr-cluster-%d.html", ld.seed))
		if err := porcupine.VisualizePath(linModel, info, path); err != nil {
			t.Errorf("writing porcupine's visualization: %v", err)
		}
		t.Errorf("the history of %d calls is not linearizable (%s): see %s", len(ld.ops), res, path)
	}
	t.Logf("checked after %d faults: %d changes on %d servers, %d starts and %d transitions acknowledged, %d calls in the history (%d of unknown outcome)",
		ld.faults+1, len(log), len(ld.cl.nodes), len(ld.starts), len(ld.transitions), len(ld.ops), ld.ambiguous)
}

// report logs the run's totals.
func (ld *clusterLoad) report(took time.Duration) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	ld.t.Logf("%v, %d faults: starts %d tried, %d acknowledged; leases %d; transitions %d tried, %d acknowledged; "+
		"worker transitions %d; orders %d tried, %d acknowledged, %d prints finished; reads %d linearizable, %d from the leader; %d calls in the history, %d of unknown outcome",
		took.Round(time.Second), ld.faults, ld.tried.starts, len(ld.starts), ld.tried.leases, ld.tried.transitions,
		len(ld.transitions), ld.reported, ld.tried.orders, len(ld.orders), ld.printed.Load(), ld.tried.linearizableGets, ld.tried.leaderGets, len(ld.ops), ld.ambiguous)
	ld.t.Logf("new leader after kill -9 of the leader: %s", spread(ld.cl.kills))
	ld.t.Logf("new leader after the leader was cut off: %s", spread(ld.cl.partitions))
}

// spread formats the minimum, median and maximum of ds.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("%d times, min %v, median %v, max %v", len(s), r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]))
}

// The linearizability model: one instance of the "report" machine as the
// loaders see it. Start creates it at "downloadable"; a lease there is
// granted only while no other lease is held; "ok" under the live lease
// moves it to "uploadable", and a retry of an applied "ok" (same token,
// same request id) is accepted without effect; a read sees whether it
// exists and its node, where "completed" also matches "uploadable" (the
// client.Workers' moves from there are not in the history).
type linKind uint8

const (
	linStart linKind = iota
	linLease
	linTransition
	linGet
)

type linIn struct {
	Kind  linKind
	ID    string
	Token uint64
}

// linOut is an operation's known outcome: for a start, created (true) or
// already there; for a transition, accepted or refused; for a read,
// found and the node.
type linOut struct {
	OK   bool
	Node string
	// Any: a start retried after an attempt of unknown outcome, answered
	// created or already there; either is right.
	Any bool
}

type linState struct {
	exists         bool
	node           string
	lease, applied uint64 // live lease's token; token of the applied "ok"
}

var linModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byID := map[string][]porcupine.Operation{}
		var ids []string
		for _, op := range h {
			id := op.Input.(linIn).ID
			if byID[id] == nil {
				ids = append(ids, id)
			}
			byID[id] = append(byID[id], op)
		}
		out := make([][]porcupine.Operation, 0, len(ids))
		for _, id := range ids {
			out = append(out, byID[id])
		}
		return out
	},
	Init: func() any { return linState{} },
	Step: func(state, input, output any) (bool, any) {
		s, in := state.(linState), input.(linIn)
		out := output.(*linOut) // nil: unknown outcome
		switch in.Kind {
		case linStart:
			created := !s.exists
			if created {
				s.exists, s.node = true, "downloadable"
			}
			return out == nil || out.Any || out.OK == created, s
		case linLease:
			if !s.exists || s.node != "downloadable" || s.lease != 0 {
				return false, s
			}
			s.lease = in.Token
			return true, s
		case linTransition:
			applies := s.exists && s.node == "downloadable" && s.lease == in.Token
			accepted := applies || s.applied == in.Token
			if applies {
				s.node, s.lease, s.applied = "uploadable", 0, in.Token
			}
			return out == nil || out.OK == accepted, s
		default:
			if !out.OK {
				return !s.exists, s
			}
			return s.exists && (out.Node == s.node || s.node == "uploadable" && out.Node == "completed"), s
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linIn), output.(*linOut)
		kind := [...]string{"start", "lease", "transition", "get"}[in.Kind]
		res := "?"
		if out != nil {
			res = fmt.Sprintf("ok=%t %s", out.OK, out.Node)
		}
		return fmt.Sprintf("%s(%s, %d) -> %s", kind, in.ID, in.Token, res)
	},
	DescribeState: func(state any) string {
		s := state.(linState)
		return fmt.Sprintf("exists=%t node=%s lease=%d applied=%d", s.exists, s.node, s.lease, s.applied)
	},
}
