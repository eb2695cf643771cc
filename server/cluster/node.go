package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/dfsmr/dfsmr/server/store"
)

// Node is one server of the raft cluster. It implements store.Proposer.
type Node struct {
	cfg   Config
	log   *slog.Logger
	fsm   *fsm
	raft  *raft.Raft
	trans *raft.NetworkTransport
	logs  *wal.WAL
	// meta is the log's metadata file, which the log does not close.
	meta   *metadb.BoltMetaDB
	stable *raftboltdb.BoltStore
	// startedAlone says the node runs with aloneTimeout.
	startedAlone bool

	notify    chan bool              // raft's leadership changes
	subscribe chan func(leader bool) // OnLeadership to watchLeadership
	stop      chan struct{}          // closed by Shutdown
	wg        sync.WaitGroup

	// readyTerm is the term in which an entry of this leader's own term
	// (a barrier) was applied: from then on its commit index is the
	// cluster's and ReadBarrier need not append.
	readyTerm atomic.Uint64

	shutdownOnce sync.Once
	shutdownErr  error
}

var _ store.Proposer = (*Node)(nil)

// Open starts the raft node of cfg over the state machine sm and returns
// once it runs; the leader is elected in the background (OnLeadership
// tells). The state is durable on its own, with its applied index: the
// log's entries at or below sm.AppliedIndex() are not applied again, and
// the latest snapshot is restored into sm first only when sm is behind it
// (its file was lost or is older).
func Open(cfg Config, sm store.StateMachine) (*Node, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "raft"),
		fsm:       newFSM(sm),
		notify:    make(chan bool, 16),
		subscribe: make(chan func(leader bool)),
		stop:      make(chan struct{}),
	}
	hcl := newHCLogger(n.log)
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "wal"), 0o700); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			n.closeStores()
		}
	}()
	var err error
	n.meta = &metadb.BoltMetaDB{}
	if n.logs, err = wal.Open(filepath.Join(cfg.Dir, "wal"), wal.WithLogger(hcl.Named("wal")), wal.WithMetaStore(n.meta), wal.WithSegmentSize(cfg.SegmentSize)); err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	if n.stable, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "stable.db")}); err != nil {
		return nil, fmt.Errorf("open raft stable store: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, snapshotsRetained, hcl.Named("snapshot"))
	if err != nil {
		return nil, fmt.Errorf("open raft snapshots: %w", err)
	}
	if err := n.catchUpFromSnapshot(snaps, sm); err != nil {
		return nil, err
	}
	if err := n.rebaseNewCluster(snaps, sm); err != nil {
		return nil, err
	}
	if err := n.checkStateNotAhead(snaps, sm); err != nil {
		return nil, err
	}

	var advertise net.Addr
	if cfg.Advertise != "" {
		if advertise, err = net.ResolveTCPAddr("tcp", cfg.Advertise); err != nil {
			return nil, &InvalidError{Field: "advertise", Reason: err.Error()}
		}
	}
	tc := &raft.NetworkTransportConfig{MaxPool: 3, Timeout: 10 * time.Second, Logger: hcl.Named("transport")}
	if len(cfg.Dial) > 0 {
		tc.ServerAddressProvider = dialAddrs(cfg.Dial)
	}
	if n.trans, err = raft.NewTCPTransportWithConfig(cfg.RaftAddr, advertise, tc); err != nil {
		return nil, fmt.Errorf("raft transport on %s: %w", cfg.RaftAddr, err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NoSnapshotRestoreOnStart = true
	// Proposals that wait while the log is written go out as one batch.
	rc.BatchApplyCh = true
	rc.NotifyCh = n.notify
	rc.Logger = hcl

	if cfg.Bootstrap {
		if err := n.bootstrap(rc, snaps); err != nil {
			return nil, err
		}
	}
	if cfg.Solo && alone(rc, n.fsm, n.logs, n.stable, snaps, n.trans) {
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = aloneTimeout, aloneTimeout, aloneTimeout
		n.startedAlone = true
	}
	if n.raft, err = raft.NewRaft(rc, n.fsm, n.logs, n.stable, snaps, n.trans); err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	ok = true
	n.wg.Add(1)
	go n.watchLeadership()
	return n, nil
}

// catchUpFromSnapshot restores the latest snapshot into sm when sm is
// behind it: raft starts applying the log after the snapshot.
func (n *Node) catchUpFromSnapshot(snaps raft.SnapshotStore, sm store.StateMachine) error {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return err
	}
	_, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", list[0].ID, err)
	}
	defer rc.Close()
	index, err := readSnapshotHeader(rc)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", list[0].ID, err)
	}
	if index <= sm.AppliedIndex() {
		return nil
	}
	n.log.Info("restoring the state from the latest snapshot: it is behind", "snapshot", list[0].ID, "state_index", sm.AppliedIndex(), "snapshot_index", index)
	if err := sm.Restore(rc); err != nil {
		return fmt.Errorf("restore snapshot %s: %w", list[0].ID, err)
	}
	n.fsm.setApplied(sm.AppliedIndex())
	return nil
}

// rebaseNewCluster makes the state the start of the log of a cluster this
// node bootstraps: a state file of another log (a restored backup, or a
// copy) keeps its records and starts over at index 0.
func (n *Node) rebaseNewCluster(snaps raft.SnapshotStore, sm store.StateMachine) error {
	if !n.cfg.Bootstrap || sm.AppliedIndex() == 0 {
		return nil
	}
	has, err := raft.HasExistingState(n.logs, n.stable, snaps)
	if err != nil || has {
		return err
	}
	n.log.Info("a new cluster starts from the state in the file, which another log wrote", "applied", sm.AppliedIndex())
	if err := sm.Rebase(); err != nil {
		return err
	}
	n.fsm.setApplied(sm.AppliedIndex())
	return nil
}

// checkStateNotAhead refuses a state that applied entries this node's log
// does not have (the raft directory was lost or belongs to another
// cluster): the state machine would skip the log's new entries at those
// indexes.
func (n *Node) checkStateNotAhead(snaps raft.SnapshotStore, sm store.StateMachine) error {
	last, err := n.logs.LastIndex()
	if err != nil {
		return err
	}
	list, err := snaps.List()
	if err != nil {
		return err
	}
	if len(list) > 0 {
		last = max(last, list[0].Index)
	}
	if applied := sm.AppliedIndex(); applied > last {
		return fmt.Errorf("the state has applied log entries up to %d but the raft log in %s ends at %d: the state belongs to another log", applied, n.cfg.Dir, last)
	}
	return nil
}

func (n *Node) bootstrap(rc *raft.Config, snaps raft.SnapshotStore) error {
	has, err := raft.HasExistingState(n.logs, n.stable, snaps)
	if err != nil || has {
		return err
	}
	var conf raft.Configuration
	if len(n.cfg.Peers) == 0 {
		conf.Servers = []raft.Server{{ID: raft.ServerID(n.cfg.ID), Address: n.trans.LocalAddr(), Suffrage: raft.Voter}}
	}
	for _, p := range n.cfg.Peers {
		if p.ID == n.cfg.ID && raft.ServerAddress(p.Addr) != n.trans.LocalAddr() {
			return &InvalidError{Field: "peers", Reason: fmt.Sprintf("gives this node the address %s, but it is reached at %s", p.Addr, n.trans.LocalAddr())}
		}
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
	}
	n.log.Info("bootstrapping a new cluster", "voters", len(conf.Servers))
	return raft.BootstrapCluster(rc, n.logs, n.stable, snaps, n.trans, conf)
}

// Addr returns the raft address the other nodes reach this one at.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// ID returns this node's raft server id.
func (n *Node) ID() string { return n.cfg.ID }

// Propose appends data to the log and returns once the entry was applied
// on this node, with the state machine's result for it. On a node that is
// not the leader it fails with a *NotLeaderError, nothing appended. Once
// the entry is appended, losing leadership, shutting down or ctx ending
// before it applied gives an error matching ErrUnknownOutcome.
func (n *Node) Propose(ctx context.Context, data []byte) error {
	return n.Submit(ctx, data)()
}

// Submit implements store.Proposer: it appends data to the log, after the
// entries of earlier calls, and returns the wait of Propose.
func (n *Node) Submit(ctx context.Context, data []byte) (wait func() error) {
	if err := ctx.Err(); err != nil {
		return func() error { return err }
	}
	select {
	case <-n.stop:
		return func() error { return ErrShutdown }
	default:
	}
	f := n.raft.Apply(data, enqueueTimeout(ctx))
	return func() error {
		if err := n.wait(ctx, f, true); err != nil {
			return err
		}
		if err, _ := f.Response().(error); err != nil {
			return err
		}
		return nil
	}
}

// enqueueTimeout bounds how long raft waits to take a proposal: ctx's
// deadline, or none.
func enqueueTimeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Nanosecond)
	}
	return 0
}

// wait waits for f and maps raft's errors to ours. When ctx ends first,
// the change may still happen if f's entry was appended (appended true:
// ErrUnknownOutcome), else ctx's error says nothing changed.
func (n *Node) wait(ctx context.Context, f raft.Future, appended bool) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return n.mapError(err)
	case <-ctx.Done():
		if appended {
			return fmt.Errorf("%w: %w", ErrUnknownOutcome, ctx.Err())
		}
		return ctx.Err()
	}
}

func (n *Node) mapError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrNotVoter):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return &NotLeaderError{} // nothing appended; the next leader is not known yet
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrUnknownOutcome, ErrShutdown)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("not appended to the log before the deadline: %w", context.DeadlineExceeded)
	}
	return err
}

func (n *Node) notLeader() *NotLeaderError {
	addr, id := n.raft.LeaderWithID()
	return &NotLeaderError{LeaderID: string(id), LeaderAddr: string(addr)}
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's raft id and address, both empty when no
// leader is known.
func (n *Node) Leader() (id, raftAddr string) {
	addr, sid := n.raft.LeaderWithID()
	return string(sid), string(addr)
}

// LeaderGRPC returns the leader's gRPC address as recorded in the state,
// and whether this node is the leader. It fails with ErrNoLeader when no
// leader is known or its address is not recorded yet.
func (n *Node) LeaderGRPC() (addr string, self bool, err error) {
	id, _ := n.Leader()
	if id == "" {
		return "", false, ErrNoLeader
	}
	if id == n.cfg.ID {
		return n.cfg.GRPCAddr, true, nil
	}
	members, err := n.fsm.sm.Members()
	if err != nil {
		return "", false, err
	}
	if addr = members[id]; addr == "" {
		return "", false, fmt.Errorf("%w: the gRPC address of the leader %s is not recorded yet", ErrNoLeader, id)
	}
	return addr, false, nil
}

// OnLeadership registers f, called with true when this node becomes the
// leader and false when it stops being it; registered while the node
// leads, f is called with true at once. Every f is called from one
// goroutine, in the order of the changes, never twice in a row with the
// same value; a slow f delays the next calls (and a burst of more than 16
// changes while it runs collapses to the latest). f must not call
// Shutdown or OnLeadership, which wait for that goroutine. After
// Shutdown, f is never called.
func (n *Node) OnLeadership(f func(leader bool)) {
	select {
	case n.subscribe <- f:
	case <-n.stop:
	}
}

// watchLeadership is the one goroutine that calls the OnLeadership
// functions, and starts recordSelf on every leadership gain.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	leader := false
	var subscribers []func(leader bool)
	var cancel context.CancelFunc // ends recordSelf when leadership ends
	stopRecord := func() {
		if cancel != nil {
			cancel()
			cancel = nil
		}
	}
	defer stopRecord()
	for {
		select {
		case <-n.stop:
			return
		case f := <-n.subscribe:
			subscribers = append(subscribers, f)
			if leader {
				f(true)
			}
		case l := <-n.notify:
			if l == leader {
				continue
			}
			leader = l
			stopRecord()
			if leader {
				cancel = n.startRecordingSelf()
			}
			for _, f := range subscribers {
				f(leader)
			}
		}
	}
}

func (n *Node) startRecordingSelf() context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	n.wg.Add(1)
	go n.recordSelf(ctx)
	return cancel
}

// recordSelf records this node's raft address in the cluster's
// configuration and its gRPC address in the state when either differs
// from the recorded one, retrying until both are recorded or leadership
// ends (ctx).
func (n *Node) recordSelf(ctx context.Context) {
	defer n.wg.Done()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := n.recordSelfOnce(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		n.log.Warn("recording this node's addresses failed; retrying", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (n *Node) recordSelfOnce(ctx context.Context) error {
	// The state may lag the log on a new leader: read it once everything
	// committed before is applied.
	if err := n.barrier(ctx); err != nil {
		return err
	}
	self, err := n.server(n.cfg.ID)
	if err != nil {
		return err
	}
	// A node restarted on another address (a one-node cluster on a free
	// port, say) would be sought at the old one once it follows.
	if addr := n.trans.LocalAddr(); self.Address != addr {
		if err := n.wait(ctx, n.raft.AddVoter(self.ID, addr, 0, 0), true); err != nil {
			return err
		}
		n.log.Info("recorded this node's new raft address", "old", self.Address, "raft_addr", addr)
	}
	members, err := n.fsm.sm.Members()
	if err != nil {
		return err
	}
	if members[n.cfg.ID] == n.cfg.GRPCAddr {
		return nil
	}
	if err := n.Propose(ctx, store.MemberCommand(n.cfg.ID, n.cfg.GRPCAddr)); err != nil {
		return err
	}
	n.log.Info("recorded this node's gRPC address", "grpc_addr", n.cfg.GRPCAddr)
	return nil
}

// AddVoter adds the server id, reached at raftAddr, as a voter and records
// its gRPC address. Only the leader can (*NotLeaderError elsewhere).
// Adding a member again with the same addresses changes nothing.
func (n *Node) AddVoter(ctx context.Context, id, raftAddr, grpcAddr string) error {
	if err := checkID("id", id); err != nil {
		return err
	}
	if err := checkAddr("raft_addr", raftAddr); err != nil {
		return err
	}
	if err := checkAddr("grpc_addr", grpcAddr); err != nil {
		return err
	}
	if !n.IsLeader() {
		return n.notLeader()
	}
	// The address first: a member whose record is missing could not be
	// named as the leader, a record without a member is never read.
	if err := n.Propose(ctx, store.MemberCommand(id, grpcAddr)); err != nil {
		return err
	}
	if err := n.wait(ctx, n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, enqueueTimeout(ctx)), true); err != nil {
		return err
	}
	if n.startedAlone {
		n.log.Warn("this server started alone and leads with the short timeouts of a server alone; restart it to use the configured ones", "timeout", aloneTimeout)
	}
	return nil
}

// RemoveServer removes the server id from the cluster and its gRPC
// address from the state. Only the leader can (*NotLeaderError
// elsewhere); an id not in the cluster gives ErrNoSuchMember. The leader
// may remove itself: it steps down once the change committed.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	if !n.IsLeader() {
		return n.notLeader()
	}
	if _, err := n.server(id); err != nil {
		return err
	}
	// The record first, while this node surely still leads (it may be
	// the one removed).
	if err := n.Propose(ctx, store.MemberCommand(id, "")); err != nil {
		return err
	}
	return n.wait(ctx, n.raft.RemoveServer(raft.ServerID(id), 0, enqueueTimeout(ctx)), true)
}

// TransferLeadership hands the leadership to the voter id, or to the most
// up-to-date voter when id is empty, and returns once it was handed over.
// Only the leader can (*NotLeaderError elsewhere).
func (n *Node) TransferLeadership(ctx context.Context, id string) error {
	if !n.IsLeader() {
		return n.notLeader()
	}
	if id == "" {
		return n.wait(ctx, n.raft.LeadershipTransfer(), true)
	}
	s, err := n.server(id)
	if err != nil {
		return err
	}
	return n.wait(ctx, n.raft.LeadershipTransferToServer(s.ID, s.Address), true)
}

func (n *Node) server(id string) (raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Server{}, n.mapError(err)
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			return s, nil
		}
	}
	return raft.Server{}, fmt.Errorf("%w: %q", ErrNoSuchMember, id)
}

// Member is one server of the cluster.
type Member struct {
	// ID is the raft server id.
	ID string
	// RaftAddr is its raft address, GRPCAddr its recorded gRPC address
	// (empty until recorded).
	RaftAddr, GRPCAddr string
	// Suffrage is "voter", "nonvoter" or "staging".
	Suffrage string
	// Leader is true for the leader as this node knows it.
	Leader bool
}

// Members lists the servers of the cluster's latest configuration, in its
// order, with their gRPC addresses recorded in the state.
func (n *Node) Members() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, n.mapError(err)
	}
	grpc, err := n.fsm.sm.Members()
	if err != nil {
		return nil, err
	}
	leader, _ := n.Leader()
	var out []Member
	for _, s := range f.Configuration().Servers {
		out = append(out, Member{
			ID:       string(s.ID),
			RaftAddr: string(s.Address),
			GRPCAddr: grpc[string(s.ID)],
			Suffrage: strings.ToLower(s.Suffrage.String()),
			Leader:   string(s.ID) == leader,
		})
	}
	return out, nil
}

// Status is this node's view of the log.
type Status struct {
	// State is "leader", "follower", "candidate" or "shutdown".
	State string
	// LeaderID is the leader's id, empty when none is known.
	LeaderID string
	// Term is the current term.
	Term uint64
	// CommitIndex is the last entry known committed; AppliedIndex the last
	// entry applied to the state; LastSnapshotIndex the last entry of the
	// latest snapshot (0: none).
	CommitIndex, AppliedIndex, LastSnapshotIndex uint64
	// LastContact is the time since this node last heard from the leader:
	// 0 on the leader and on a node that never heard from one.
	LastContact time.Duration
}

// Status returns this node's view of the log.
func (n *Node) Status() Status {
	st := Status{
		State:        strings.ToLower(n.raft.State().String()),
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.fsm.appliedIndex(),
	}
	st.LeaderID, _ = n.Leader()
	st.LastSnapshotIndex, _ = strconv.ParseUint(n.raft.Stats()["last_snapshot_index"], 10, 64)
	if last := n.raft.LastContact(); n.raft.State() != raft.Leader && !last.IsZero() {
		st.LastContact = time.Since(last)
	}
	return st
}

// ReadBarrier returns once this node's state holds every entry committed
// before the call, having checked with a quorum that it still leads: a
// read after it is linearizable. It fails with a *NotLeaderError on a
// node that is not the leader.
func (n *Node) ReadBarrier(ctx context.Context) error {
	if !n.IsLeader() {
		return n.notLeader()
	}
	if n.readyTerm.Load() != n.raft.CurrentTerm() {
		if err := n.barrier(ctx); err != nil {
			return n.readError(err)
		}
	}
	commit := n.raft.CommitIndex()
	if err := n.wait(ctx, n.raft.VerifyLeader(), false); err != nil {
		return n.readError(err)
	}
	target, err := n.lastCommand(commit)
	if err != nil {
		return err
	}
	return n.fsm.waitApplied(ctx, target)
}

// readError maps the errors of the entries a read appends: a read has no
// outcome to be unknown; leadership lost midway is not leading.
func (n *Node) readError(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	case errors.Is(err, ErrShutdown):
		return ErrShutdown
	case errors.Is(err, ErrUnknownOutcome):
		return n.notLeader()
	}
	return err
}

// barrier appends a barrier and waits until it and everything before it
// applied. A new leader's commit index may lag what earlier leaders
// committed until an entry of its own term commits; once the barrier
// did, the term is marked ready for reads.
func (n *Node) barrier(ctx context.Context) error {
	term := n.raft.CurrentTerm()
	if err := n.wait(ctx, n.raft.Barrier(enqueueTimeout(ctx)), true); err != nil {
		return err
	}
	n.readyTerm.Store(term)
	return nil
}

// lastCommand returns the index of the last entry at or below index that
// the state machine applies (entries of other kinds, such as the no-op a
// new leader appends, are not handed to it), or 0 when that entry is in
// the compacted part of the log, which a snapshot of the state holds.
func (n *Node) lastCommand(index uint64) (uint64, error) {
	first, err := n.logs.FirstIndex()
	if err != nil {
		return 0, err
	}
	for ; index >= first && index > 0; index-- {
		var l raft.Log
		if err := n.logs.GetLog(index, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				return 0, nil // compacted meanwhile
			}
			return 0, err
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return index, nil
		}
	}
	return 0, nil
}

// Shutdown stops the node: raft, the leadership watcher, the transport and
// the stores. It is idempotent; the state machine stays open.
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() {
		close(n.stop)
		err := n.raft.Shutdown().Error()
		n.wg.Wait()
		n.shutdownErr = errors.Join(err, n.closeStores())
	})
	return n.shutdownErr
}

func (n *Node) closeStores() error {
	var errs []error
	if n.trans != nil {
		errs = append(errs, n.trans.Close())
	}
	if n.logs != nil {
		errs = append(errs, n.logs.Close())
	}
	if n.meta != nil {
		errs = append(errs, n.meta.Close())
	}
	if n.stable != nil {
		errs = append(errs, n.stable.Close())
	}
	return errors.Join(errs...)
}
