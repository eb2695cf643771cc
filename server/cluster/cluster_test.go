package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/cluster"
	"github.com/dfsmr/dfsmr/server/store"
)

// memSM is a test StateMachine: the data of the applied command entries in
// order, the recorded members, the applied index. Kept across a restart of
// its node it plays a durable state; a new one plays a lost state file.
type memSM struct {
	mu       sync.Mutex
	state    memState
	restores int
	changed  chan struct{} // closed and replaced on every change
	// snapshotReleased receives once a snapshot is released: raft has
	// persisted it and compacted the log by then.
	snapshotReleased chan struct{}
}

type memState struct {
	Applied uint64
	Entries []string
	Members map[string]string
}

var errRefused = errors.New("refused by the state")

func newMemSM() *memSM {
	return &memSM{
		state:            memState{Members: map[string]string{}},
		changed:          make(chan struct{}),
		snapshotReleased: make(chan struct{}, 16),
	}
}

func (m *memSM) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *memSM) Apply(entries []store.Entry) []error {
	m.mu.Lock()
	defer m.mu.Unlock()
	errs := make([]error, len(entries))
	for i, e := range entries {
		if e.Index <= m.state.Applied {
			continue
		}
		switch {
		case len(e.Data) > 0 && e.Data[0] == store.CommandMember:
			id, addr, err := store.DecodeMemberCommand(e.Data)
			switch {
			case err != nil:
				errs[i] = err
			case addr == "":
				delete(m.state.Members, id)
			default:
				m.state.Members[id] = addr
			}
		case string(e.Data) == "refuse":
			errs[i] = errRefused
		default:
			m.state.Entries = append(m.state.Entries, string(e.Data))
		}
		m.state.Applied = e.Index
	}
	m.notifyLocked()
	return errs
}

func (m *memSM) AppliedIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Applied
}

func (m *memSM) Snapshot() (store.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := json.Marshal(m.state)
	return &memSnapshot{index: m.state.Applied, data: b, released: m.snapshotReleased}, err
}

func (m *memSM) Restore(r io.Reader) error {
	var st memState
	if err := json.NewDecoder(r).Decode(&st); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state = st
	m.restores++
	m.notifyLocked()
	return nil
}

func (m *memSM) Rebase() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state.Applied = 0
	m.notifyLocked()
	return nil
}

func (m *memSM) Members() (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.state.Members))
	for k, v := range m.state.Members {
		out[k] = v
	}
	return out, nil
}

func (m *memSM) entries() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.state.Entries)
}

func (m *memSM) restoreCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.restores
}

// waitFor waits until cond holds on the state.
func (m *memSM) waitFor(t *testing.T, what string, cond func(memState) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		m.mu.Lock()
		ok, changed := cond(m.state), m.changed
		m.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

type memSnapshot struct {
	index    uint64
	data     []byte
	released chan struct{}
}

func (s *memSnapshot) Index() uint64 { return s.index }
func (s *memSnapshot) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(s.data)
	return int64(n), err
}
func (s *memSnapshot) Release() {
	select {
	case s.released <- struct{}{}:
	default:
	}
}

// logWriter sends log lines to t.Log until the test ends; it also keeps
// them for inspection.
type logWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
	buf  bytes.Buffer
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
		w.buf.Write(p)
	}
	return len(p), nil
}

func (w *logWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// harness runs the nodes of one test and collects their leadership
// changes.
type harness struct {
	t      *testing.T
	logs   *logWriter
	events chan event
}

type event struct {
	id     string
	leader bool
	at     time.Time
}

type testNode struct {
	*cluster.Node
	sm   *memSM
	dir  string
	grpc string
}

func newHarness(t *testing.T) *harness {
	w := &logWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return &harness{t: t, logs: w, events: make(chan event, 256)}
}

// open opens a node on 127.0.0.1 (addr "": a free port) over sm in dir.
func (h *harness) open(id, addr, dir string, sm store.StateMachine, configure func(*cluster.Config)) *testNode {
	h.t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	grpc := "grpc-" + id + ":5003"
	cfg := cluster.Config{
		ID:       id,
		RaftAddr: addr,
		GRPCAddr: grpc,
		Dir:      dir,
		Logger:   slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", id),
	}
	if configure != nil {
		configure(&cfg)
	}
	n, err := cluster.Open(cfg, sm)
	if err != nil {
		h.t.Fatalf("open %s: %v", id, err)
	}
	n.OnLeadership(func(leader bool) { h.events <- event{id: id, leader: leader, at: time.Now()} })
	h.t.Cleanup(func() { _ = n.Shutdown() })
	mem, _ := sm.(*memSM)
	return &testNode{Node: n, sm: mem, dir: dir, grpc: grpc}
}

// waitLeader waits for a node to report leadership and returns its id and
// when it did.
func (h *harness) waitLeader() (string, time.Time) {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-h.events:
			if e.leader {
				return e.id, e.at
			}
		case <-deadline:
			h.t.Fatal("no leader elected within 10 s")
		}
	}
}

func propose(t *testing.T, n *testNode, data ...string) {
	t.Helper()
	for _, d := range data {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := n.Propose(ctx, []byte(d))
		cancel()
		if err != nil {
			t.Fatalf("propose %q on %s: %v", d, n.ID(), err)
		}
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func hasEntries(want []string) func(memState) bool {
	return func(s memState) bool { return slices.Equal(s.Entries, want) }
}

func hasMember(id, addr string) func(memState) bool {
	return func(s memState) bool { return s.Members[id] == addr }
}

func TestSingleNodeBootstrapsAndProposes(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	sm := newMemSM()
	n := h.open("n1", "", dir, sm, func(c *cluster.Config) { c.Bootstrap = true })
	if id, _ := h.waitLeader(); id != "n1" {
		t.Fatalf("leader %s", id)
	}
	// Registered while the node leads: told at once.
	told := make(chan bool, 1)
	n.OnLeadership(func(leader bool) {
		select {
		case told <- leader:
		default:
		}
	})
	select {
	case l := <-told:
		if !l {
			t.Fatal("a late subscriber was told false")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a late subscriber was not told")
	}
	propose(t, n, "a", "b")
	if got := sm.entries(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("applied %q", got)
	}
	// The state's refusal is the proposal's error.
	if err := n.Propose(ctx(t), []byte("refuse")); !errors.Is(err, errRefused) {
		t.Fatalf("propose refused entry: %v", err)
	}
	// The leader records its own gRPC address once it leads.
	sm.waitFor(t, "n1's gRPC address", hasMember("n1", n.grpc))
	if addr, self, err := n.LeaderGRPC(); err != nil || !self || addr != n.grpc {
		t.Fatalf("LeaderGRPC = %q, %v, %v", addr, self, err)
	}
	if err := n.ReadBarrier(ctx(t)); err != nil {
		t.Fatal(err)
	}
	st := n.Status()
	if st.State != "leader" || st.LeaderID != "n1" || st.Term == 0 || st.AppliedIndex < sm.AppliedIndex() || st.CommitIndex < st.AppliedIndex || st.LastContact != 0 {
		t.Fatalf("status %+v, state applied %d", st, sm.AppliedIndex())
	}
	members, err := n.Members()
	if err != nil {
		t.Fatal(err)
	}
	want := []cluster.Member{{ID: "n1", RaftAddr: n.Addr(), GRPCAddr: n.grpc, Suffrage: "voter", Leader: true}}
	if !slices.Equal(members, want) {
		t.Fatalf("members %+v, want %+v", members, want)
	}
	if logs := h.logs.String(); !strings.Contains(logs, "component=raft") || !strings.Contains(logs, "entering leader state") {
		t.Fatalf("raft's lines are not in the slog logger:\n%s", logs)
	}

	// Restart over the same, durable state: nothing is applied twice, the
	// bootstrap setting is ignored, proposals go on.
	addr := n.Addr()
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := n.Propose(ctx(t), []byte("c")); !errors.Is(err, cluster.ErrShutdown) || errors.Is(err, cluster.ErrUnknownOutcome) {
		t.Fatalf("propose after shutdown: %v", err)
	}
	n = h.open("n1", addr, dir, sm, func(c *cluster.Config) { c.Bootstrap = true })
	h.waitLeader()
	// The last committed entry is the new leader's no-op, which the state
	// never sees: the barrier waits for the command before it.
	if err := n.ReadBarrier(ctx(t)); err != nil {
		t.Fatalf("read barrier on a new leader: %v", err)
	}
	propose(t, n, "c")
	if got := sm.entries(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("after restart applied %q", got)
	}

	// Restart over a lost state (no snapshot yet): the log applies again.
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// A free port and another gRPC address: the leader records both.
	sm2 := newMemSM()
	n = h.open("n1", "", dir, sm2, func(c *cluster.Config) { c.GRPCAddr = "grpc-n1-moved:5003" })
	if n.Addr() == addr {
		t.Fatalf("reopened at the same address %s", addr)
	}
	h.waitLeader()
	// A new leader's commit index starts behind what was committed: the
	// barrier catches it up before the read.
	if err := n.ReadBarrier(ctx(t)); err != nil {
		t.Fatalf("read barrier on a new leader: %v", err)
	}
	if got := sm2.entries(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("after a read barrier on a new leader the state has %q", got)
	}
	sm2.waitFor(t, "n1's new gRPC address", hasMember("n1", "grpc-n1-moved:5003"))
	members, err = n.Members()
	want = []cluster.Member{{ID: "n1", RaftAddr: n.Addr(), GRPCAddr: "grpc-n1-moved:5003", Suffrage: "voter", Leader: true}}
	if err != nil || !slices.Equal(members, want) {
		t.Fatalf("members %+v, %v; want %+v", members, err, want)
	}
}

func TestThreeNodes(t *testing.T) {
	h := newHarness(t)
	nodes := map[string]*testNode{}
	nodes["n1"] = h.open("n1", "", t.TempDir(), newMemSM(), func(c *cluster.Config) { c.Bootstrap = true })
	if id, _ := h.waitLeader(); id != "n1" {
		t.Fatalf("leader %s", id)
	}
	for _, id := range []string{"n2", "n3"} {
		nodes[id] = h.open(id, "", t.TempDir(), newMemSM(), nil)
		if err := nodes["n1"].AddVoter(ctx(t), id, nodes[id].Addr(), nodes[id].grpc); err != nil {
			t.Fatalf("add %s: %v", id, err)
		}
	}
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprint("e", i))
	}
	propose(t, nodes["n1"], want...)
	for id, n := range nodes {
		n.sm.waitFor(t, id+" applying every entry", hasEntries(want))
		n.sm.waitFor(t, id+" knowing n1's gRPC address", hasMember("n1", nodes["n1"].grpc))
	}

	// A follower refuses, naming the leader.
	var nle *cluster.NotLeaderError
	if err := nodes["n2"].Propose(ctx(t), []byte("x")); !errors.As(err, &nle) || nle.LeaderID != "n1" || nle.LeaderAddr != nodes["n1"].Addr() || !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("propose on a follower: %v", err)
	}
	if err := nodes["n2"].ReadBarrier(ctx(t)); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("read barrier on a follower: %v", err)
	}
	if err := nodes["n2"].AddVoter(ctx(t), "n4", "127.0.0.1:1", "127.0.0.1:2"); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("add voter on a follower: %v", err)
	}
	if addr, self, err := nodes["n3"].LeaderGRPC(); err != nil || self || addr != nodes["n1"].grpc {
		t.Fatalf("LeaderGRPC on a follower = %q, %v, %v", addr, self, err)
	}
	if st := nodes["n3"].Status(); st.State != "follower" || st.LeaderID != "n1" || st.LastContact <= 0 {
		t.Fatalf("follower status %+v", st)
	}
	if err := nodes["n1"].ReadBarrier(ctx(t)); err != nil {
		t.Fatal(err)
	}

	// The leader goes away: another takes over, proposals go on.
	oldAddr := nodes["n1"].Addr()
	stopped := time.Now()
	if err := nodes["n1"].Shutdown(); err != nil {
		t.Fatal(err)
	}
	var newLeader string
	var elected time.Time
	for newLeader == "" || newLeader == "n1" {
		newLeader, elected = h.waitLeader()
	}
	took := elected.Sub(stopped)
	t.Logf("new leader %s %v after the leader stopped", newLeader, took)
	if took > 2*time.Second {
		t.Errorf("a new leader took %v, want at most 2 s", took)
	}
	leader := nodes[newLeader]
	want = append(want, "after failover")
	propose(t, leader, "after failover")
	nodes[newLeader].sm.waitFor(t, newLeader+" recording its gRPC address", hasMember(newLeader, leader.grpc))

	// The old leader restarts on its directory and catches up.
	nodes["n1"] = h.open("n1", oldAddr, nodes["n1"].dir, nodes["n1"].sm, nil)
	for id, n := range nodes {
		n.sm.waitFor(t, id+" applying every entry", hasEntries(want))
	}

	// Leadership goes to another voter, or where it is sent.
	if err := leader.TransferLeadership(ctx(t), ""); err != nil {
		t.Fatal(err)
	}
	next, _ := h.waitLeader()
	if next == newLeader {
		t.Fatalf("leadership stayed with %s", next)
	}
	transfer := func(from, to string) {
		t.Helper()
		if err := nodes[from].TransferLeadership(ctx(t), to); err != nil {
			t.Fatal(err)
		}
		if id, _ := h.waitLeader(); id != to {
			t.Fatalf("leadership sent to %s went to %s", to, id)
		}
	}
	if next == "n1" {
		transfer("n1", newLeader)
		next = newLeader
	}
	transfer(next, "n1")
	if err := nodes["n1"].TransferLeadership(ctx(t), "n9"); !errors.Is(err, cluster.ErrNoSuchMember) {
		t.Fatalf("transfer to an unknown server: %v", err)
	}

	// A server leaves: the other two go on.
	if err := nodes["n1"].RemoveServer(ctx(t), "n9"); !errors.Is(err, cluster.ErrNoSuchMember) {
		t.Fatalf("remove an unknown server: %v", err)
	}
	if err := nodes["n1"].RemoveServer(ctx(t), "n3"); err != nil {
		t.Fatal(err)
	}
	members, err := nodes["n1"].Members()
	if err != nil {
		t.Fatal(err)
	}
	wantMembers := []cluster.Member{
		{ID: "n1", RaftAddr: nodes["n1"].Addr(), GRPCAddr: nodes["n1"].grpc, Suffrage: "voter", Leader: true},
		{ID: "n2", RaftAddr: nodes["n2"].Addr(), GRPCAddr: nodes["n2"].grpc, Suffrage: "voter"},
	}
	if !slices.Equal(members, wantMembers) {
		t.Fatalf("members %+v, want %+v", members, wantMembers)
	}
	want = append(want, "after removal")
	propose(t, nodes["n1"], "after removal")
	nodes["n2"].sm.waitFor(t, "n2 applying after the removal", hasEntries(want))

	// The leader removes itself: it steps down, n2 leads alone.
	if err := nodes["n1"].RemoveServer(ctx(t), "n1"); err != nil {
		t.Fatalf("the leader removing itself: %v", err)
	}
	if id, _ := h.waitLeader(); id != "n2" {
		t.Fatalf("leader after n1 left: %s", id)
	}
	want = append(want, "n2 alone")
	propose(t, nodes["n2"], "n2 alone")
	nodes["n2"].sm.waitFor(t, "n1's record removed", func(s memState) bool { _, ok := s.Members["n1"]; return !ok })
	if got := nodes["n2"].sm.entries(); !slices.Equal(got, want) {
		t.Fatalf("n2 applied %q", got)
	}
}

func TestSnapshotCatchUp(t *testing.T) {
	h := newHarness(t)
	compact := func(c *cluster.Config) {
		c.SnapshotInterval = 20 * time.Millisecond
		c.SnapshotThreshold = 8
		c.TrailingLogs = 4
		cluster.SetWALSegmentSize(c, 1024)
	}
	n1 := h.open("n1", "", t.TempDir(), newMemSM(), func(c *cluster.Config) { compact(c); c.Bootstrap = true })
	h.waitLeader()
	var want []string
	for i := range 30 {
		want = append(want, fmt.Sprint("e", i, strings.Repeat(".", 100)))
	}
	propose(t, n1, want...)
	select {
	case <-n1.sm.snapshotReleased:
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot taken")
	}
	if st := n1.Status(); st.LastSnapshotIndex == 0 {
		t.Fatalf("status after a snapshot: %+v", st)
	}

	// A node added later gets the snapshot, then the log after it.
	n2 := h.open("n2", "", t.TempDir(), newMemSM(), compact)
	if err := n1.AddVoter(ctx(t), "n2", n2.Addr(), n2.grpc); err != nil {
		t.Fatal(err)
	}
	want = append(want, "after join")
	propose(t, n1, "after join")
	n2.sm.waitFor(t, "n2 applying every entry", hasEntries(want))
	// (The leader may snapshot again while n2 catches up, and send that.)
	if n2.sm.restoreCount() < 1 {
		t.Fatalf("n2 restored %d snapshots", n2.sm.restoreCount())
	}

	// n2 restarts with its state lost: the latest snapshot is restored
	// before raft starts, the log after it is applied.
	addr := n2.Addr()
	if err := n2.Shutdown(); err != nil {
		t.Fatal(err)
	}
	sm := newMemSM()
	n2 = h.open("n2", addr, n2.dir, sm, compact)
	if sm.restoreCount() != 1 || sm.AppliedIndex() == 0 {
		t.Fatalf("after open over a lost state: %d restores, applied %d", sm.restoreCount(), sm.AppliedIndex())
	}
	want = append(want, "after restart")
	propose(t, n1, "after restart")
	sm.waitFor(t, "n2 applying every entry after the restart", hasEntries(want))
}

func TestOpenRefusesStateAheadOfLog(t *testing.T) {
	h := newHarness(t)
	sm := newMemSM()
	sm.Apply([]store.Entry{{Index: 5, Term: 1, Data: []byte("x")}})
	_, err := cluster.Open(cluster.Config{ID: "n2", RaftAddr: "127.0.0.1:0", GRPCAddr: "grpc-n2:5003", Dir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(h.logs, nil))}, sm)
	if err == nil || !strings.Contains(err.Error(), "belongs to another log") {
		t.Fatalf("joining with a state ahead of an empty log: %v", err)
	}
}

// TestBootstrapRebasesAnotherLogsState: a new cluster starts from a state
// file another log wrote (a restored backup): the records stay, the
// indexes start over.
func TestBootstrapRebasesAnotherLogsState(t *testing.T) {
	h := newHarness(t)
	sm := newMemSM()
	sm.Apply([]store.Entry{{Index: 50, Term: 3, Data: []byte("x")}})
	n := h.open("n1", "", t.TempDir(), sm, func(c *cluster.Config) { c.Bootstrap = true })
	h.waitLeader()
	propose(t, n, "y")
	if got := sm.entries(); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("applied %q", got)
	}
	if st := n.Status(); st.AppliedIndex != sm.AppliedIndex() || st.AppliedIndex > st.CommitIndex {
		t.Fatalf("status %+v; the state applied %d", st, sm.AppliedIndex())
	}
}

func TestAddVoterValidates(t *testing.T) {
	h := newHarness(t)
	n := h.open("n1", "", t.TempDir(), newMemSM(), func(c *cluster.Config) { c.Bootstrap = true })
	h.waitLeader()
	for _, tc := range []struct{ id, raft, grpc, field string }{
		{"", "127.0.0.1:1", "127.0.0.1:2", "id"},
		{"a b", "127.0.0.1:1", "127.0.0.1:2", "id"},
		{"n2", "0.0.0.0:1", "127.0.0.1:2", "raft_addr"},
		{"n2", "127.0.0.1", "127.0.0.1:2", "raft_addr"},
		{"n2", "127.0.0.1:1", "", "grpc_addr"},
		{"n2", "127.0.0.1:1", strings.Repeat("h", 300) + ":1", "grpc_addr"},
	} {
		var inv *cluster.InvalidError
		if err := n.AddVoter(ctx(t), tc.id, tc.raft, tc.grpc); !errors.As(err, &inv) || inv.Field != tc.field || !errors.Is(err, cluster.ErrInvalid) {
			t.Errorf("AddVoter(%q, %q, %q) = %v, want an invalid %s", tc.id, tc.raft, tc.grpc, err, tc.field)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := cluster.Config{ID: "n1", RaftAddr: "127.0.0.1:5004", GRPCAddr: "127.0.0.1:5003", Dir: "d"}
	for _, tc := range []struct {
		name  string
		edit  func(*cluster.Config)
		field string
	}{
		{"ok", func(*cluster.Config) {}, ""},
		{"bad id", func(c *cluster.Config) { c.ID = "n/1" }, "id"},
		{"long id", func(c *cluster.Config) { c.ID = strings.Repeat("n", 65) }, "id"},
		{"no raft addr", func(c *cluster.Config) { c.RaftAddr = "" }, "raft_addr"},
		{"all interfaces, no advertise", func(c *cluster.Config) { c.RaftAddr = "0.0.0.0:5004" }, "advertise"},
		{"all interfaces, advertised", func(c *cluster.Config) { c.RaftAddr = ":5004"; c.Advertise = "10.0.0.1:5004" }, ""},
		{"unspecified advertise", func(c *cluster.Config) { c.Advertise = "[::]:5004" }, "advertise"},
		{"no grpc addr", func(c *cluster.Config) { c.GRPCAddr = "" }, "grpc_addr"},
		{"no dir", func(c *cluster.Config) { c.Dir = "" }, "dir"},
		{"peers without bootstrap", func(c *cluster.Config) { c.Peers = []cluster.Peer{{ID: "n1", Addr: "127.0.0.1:5004"}} }, "peers"},
		{"peers without self", func(c *cluster.Config) {
			c.Bootstrap = true
			c.Peers = []cluster.Peer{{ID: "n2", Addr: "127.0.0.1:5005"}}
		}, "peers"},
		{"peers twice", func(c *cluster.Config) {
			c.Bootstrap = true
			c.Peers = []cluster.Peer{{ID: "n1", Addr: "127.0.0.1:5004"}, {ID: "n1", Addr: "127.0.0.1:5005"}}
		}, "peers"},
		{"peers ok", func(c *cluster.Config) {
			c.Bootstrap = true
			c.Peers = []cluster.Peer{{ID: "n1", Addr: "127.0.0.1:5004"}, {ID: "n2", Addr: "127.0.0.1:5005"}}
		}, ""},
		{"lease above heartbeat", func(c *cluster.Config) { c.LeaderLeaseTimeout = time.Second }, "leader_lease_timeout"},
		{"election below heartbeat", func(c *cluster.Config) { c.ElectionTimeout = 100 * time.Millisecond }, "election_timeout"},
		{"tiny snapshot interval", func(c *cluster.Config) { c.SnapshotInterval = time.Millisecond }, "snapshot_interval"},
		{"negative heartbeat", func(c *cluster.Config) { c.HeartbeatTimeout = -time.Second }, "heartbeat_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.WithDefaults().Validate()
			var inv *cluster.InvalidError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.field != "" && (!errors.As(err, &inv) || inv.Field != tc.field):
				t.Fatalf("Validate = %v, want an invalid %s", err, tc.field)
			}
		})
	}
}

func TestParsePeers(t *testing.T) {
	got, err := cluster.ParsePeers("n1=127.0.0.1:5004, n2=127.0.0.1:5005")
	if want := []cluster.Peer{{ID: "n1", Addr: "127.0.0.1:5004"}, {ID: "n2", Addr: "127.0.0.1:5005"}}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("ParsePeers = %v, %v", got, err)
	}
	if _, err := cluster.ParsePeers("n1"); !errors.Is(err, cluster.ErrInvalid) {
		t.Fatalf("ParsePeers without =: %v", err)
	}
}

// freeAddrs returns n loopback addresses with ports free a moment ago.
func freeAddrs(t *testing.T, n int) []string {
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		defer l.Close()
	}
	return addrs
}

func TestBootstrapPeers(t *testing.T) {
	h := newHarness(t)
	addrs := freeAddrs(t, 3)
	ids := []string{"n1", "n2", "n3"}
	var peers []cluster.Peer
	for i, id := range ids {
		peers = append(peers, cluster.Peer{ID: id, Addr: addrs[i]})
	}

	// A node whose own entry has another address than its own is refused.
	_, err := cluster.Open(cluster.Config{ID: "n1", RaftAddr: "127.0.0.1:0", GRPCAddr: "grpc-n1:5003", Dir: t.TempDir(),
		Bootstrap: true, Peers: peers, Logger: slog.New(slog.NewTextHandler(h.logs, nil))}, newMemSM())
	var inv *cluster.InvalidError
	if !errors.As(err, &inv) || inv.Field != "peers" {
		t.Fatalf("open with a peers entry for itself at another address: %v", err)
	}

	var nodes []*testNode
	for i, id := range ids {
		nodes = append(nodes, h.open(id, addrs[i], t.TempDir(), newMemSM(), func(c *cluster.Config) {
			c.Bootstrap = true
			c.Peers = peers
		}))
	}
	id, _ := h.waitLeader()
	leader := nodes[slices.Index(ids, id)]
	propose(t, leader, "a", "b")
	for _, n := range nodes {
		n.sm.waitFor(t, n.ID()+" applying every entry", hasEntries([]string{"a", "b"}))
		n.sm.waitFor(t, n.ID()+" knowing the leader's gRPC address", hasMember(id, leader.grpc))
	}
	members, err := nodes[0].Members()
	if err != nil || len(members) != 3 {
		t.Fatalf("members %+v, %v", members, err)
	}
}

func TestProposeOutcomeUnknown(t *testing.T) {
	h := newHarness(t)
	// A lease long enough for the deadline below to end first, whatever
	// the defaults are.
	n1 := h.open("n1", "", t.TempDir(), newMemSM(), func(c *cluster.Config) {
		c.Bootstrap = true
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
	})
	h.waitLeader()
	n2 := h.open("n2", "", t.TempDir(), newMemSM(), nil)
	if err := n1.AddVoter(ctx(t), "n2", n2.Addr(), n2.grpc); err != nil {
		t.Fatal(err)
	}
	// Without n2 no entry commits: n1 keeps leading for a lease, then
	// steps down.
	if err := n2.Shutdown(); err != nil {
		t.Fatal(err)
	}
	lost := make(chan error, 1)
	go func() { lost <- n1.Propose(context.Background(), []byte("until leadership is lost")) }()
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := n1.Propose(short, []byte("until the deadline")); !errors.Is(err, cluster.ErrUnknownOutcome) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("propose until the deadline: %v", err)
	}
	select {
	case err := <-lost:
		if !errors.Is(err, cluster.ErrUnknownOutcome) || errors.Is(err, cluster.ErrNotLeader) {
			t.Fatalf("propose until leadership is lost: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("n1 kept leading without a quorum")
	}
	// Now nothing is appended: no leader is known.
	var nle *cluster.NotLeaderError
	if err := n1.Propose(ctx(t), []byte("x")); !errors.As(err, &nle) || nle.LeaderID != "" {
		t.Fatalf("propose without a leader: %v", err)
	}
	if _, _, err := n1.LeaderGRPC(); !errors.Is(err, cluster.ErrNoLeader) {
		t.Fatalf("LeaderGRPC without a leader: %v", err)
	}
}
