package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server/cluster"
	"github.com/dfsmr/dfsmr/server/forward"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Every server runs the replicated log (package cluster): a server alone
// is a cluster of one, which bootstraps itself on its first start. Writes
// are proposed on the leader; the scheduler, the lease expiry and the
// sweeps run on the leader only (engine.Lead), started on every leadership
// it wins and stopped when it loses it.

// startingProposer refuses writes before Start opened the log.
type startingProposer struct{}

func (startingProposer) Submit(context.Context, []byte) func() error {
	return func() error { return &cluster.NotLeaderError{} }
}

// raftDir is RaftDir, or its default next to DB (derived here rather than
// in WithDefaults, which runs before the flags set DB).
func (c Config) raftDir() string {
	if c.RaftDir != "" {
		return c.RaftDir
	}
	return c.DB + ".raft"
}

// nodeIDFile records a server's id in its raft directory: the id of a
// member never changes, whatever the host is called later.
const nodeIDFile = "node-id"

// nodeID returns the server's id: the configured one, which must match
// the recorded one if any, else the recorded one, else the host name
// (made to fit), recorded for the next starts.
func nodeID(cfg Config) (string, error) {
	if err := os.MkdirAll(cfg.raftDir(), 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(cfg.raftDir(), nodeIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		rec := strings.TrimSpace(string(b))
		if cfg.NodeID != "" && cfg.NodeID != rec {
			return "", fmt.Errorf("node_id %q differs from %q, recorded in %s by this server's first start: a server's id never changes (give a new raft_dir to start a new member)", cfg.NodeID, rec, path)
		}
		return rec, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", err
	}
	id := cfg.NodeID
	if id == "" {
		host, _ := os.Hostname()
		id = regexp.MustCompile(`[^A-Za-z0-9._-]`).ReplaceAllString(host, "-")
		if len(id) > 64 {
			id = id[:64]
		}
		if id == "" {
			id = "dfsmr"
		}
	}
	if !cluster.ValidID(id) {
		return "", fmt.Errorf("node_id %q: want 1 to 64 of A-Z a-z 0-9 . _ -", id)
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	return id, nil
}

// openCluster opens the log of this server, which serves gRPC at
// grpcAddr, and hands it the store's writes.
func (s *Server) openCluster(grpcAddr string) error {
	id, err := nodeID(s.cfg)
	if err != nil {
		return err
	}
	peers, err := cluster.ParsePeers(s.cfg.BootstrapPeers)
	if err != nil {
		return err
	}
	dial, err := cluster.ParsePeers(s.cfg.RaftDial)
	if err != nil {
		return fmt.Errorf("raft_dial: %w", err)
	}
	dialMap := map[string]string{}
	for _, p := range dial {
		dialMap[p.ID] = p.Addr
	}
	// Raft encodes this server's own address into every request it sends
	// through the same lookup as the members it dials: without an entry
	// for itself, each request logged a warning before falling back to
	// the advertised address, which this entry names.
	if _, ok := dialMap[id]; len(dialMap) > 0 && !ok {
		dialMap[id] = cmp.Or(s.cfg.RaftAdvertise, s.cfg.RaftAddr)
	}
	raftAddr := s.cfg.RaftAddr
	if raftAddr == "" {
		// One server alone: nobody dials its log.
		raftAddr = "127.0.0.1:0"
	}
	node, err := cluster.Open(cluster.Config{
		ID:        id,
		RaftAddr:  raftAddr,
		Advertise: s.cfg.RaftAdvertise,
		GRPCAddr:  grpcAddr,
		Dir:       s.cfg.raftDir(),
		Bootstrap: s.cfg.Join == "",
		Peers:     peers,
		Dial:      dialMap,
		Logger:    s.cfg.Logger,
		// A server given no raft address runs alone: it leads at once.
		Solo: s.cfg.RaftAddr == "",

		SnapshotThreshold: s.cfg.RaftSnapshotThreshold,
		SnapshotInterval:  s.cfg.RaftSnapshotInterval,
		TrailingLogs:      s.cfg.RaftTrailingLogs,
		SegmentSize:       s.cfg.RaftSegmentSize,
	}, s.store)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	s.nodeP.Store(node)
	s.leaderCh = make(chan bool, 1)
	s.leaderDone = make(chan struct{})
	s.firstLead = make(chan error, 1)
	node.OnLeadership(func(leader bool) {
		s.fwd.LeaderChanged()
		s.leaderChanges.Add(1)
		// Keep only the latest: the loop reads it when it is free.
		select {
		case <-s.leaderCh:
		default:
		}
		s.leaderCh <- leader
	})
	s.store.SetProposer(node)
	go s.followLeadership()
	if s.cfg.Join != "" {
		go s.joinCluster()
	}
	return nil
}

// followLeadership runs engine.Lead when this server becomes the leader
// and engine.Follow when it stops being it, until Stop.
func (s *Server) followLeadership() {
	defer close(s.leaderDone)
	leading := false
	for {
		select {
		case <-s.draining.Done():
			return
		case leader := <-s.leaderCh:
			if leader == leading {
				continue
			}
			leading = leader
			if !leader {
				s.log.Info("no longer the leader: the scheduler stops here")
				if err := s.engine.Follow(context.Background()); err != nil {
					s.log.Error("stop leading", "err", err)
				}
				continue
			}
			err := s.lead()
			select {
			case s.firstLead <- err:
			default:
			}
			if err != nil {
				s.log.Error("start leading", "err", err)
			}
		}
	}
}

// lead does what a new leader does once everything committed before is
// applied: defines the bundled and configured machines (unchanged ones
// are no-ops) and runs the engine's leader work.
func (s *Server) lead() error {
	ctx, cancel := context.WithTimeout(s.draining, time.Minute)
	defer cancel()
	if err := s.raftNode().Barrier(ctx); err != nil {
		return err
	}
	if err := s.loadMachines(ctx); err != nil {
		return err
	}
	if err := s.engine.Lead(ctx); err != nil {
		return err
	}
	s.log.Info("leading: the scheduler runs here", "node", s.raftNode().ID())
	return nil
}

// waitFirstLead waits, for a server that forms a cluster alone, until it
// leads and defined its machines, so that Start returns a server that
// takes writes (and reports a bad machine file).
func (s *Server) waitFirstLead(ctx context.Context) error {
	if s.cfg.Join != "" || s.cfg.BootstrapPeers != "" || !s.raftNode().Alone() {
		return nil
	}
	select {
	case err := <-s.firstLead:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("cluster: this server alone did not become its leader in 30s")
	}
}

// nodeStatus is the node's status, zero before Start.
func (s *Server) nodeStatus() cluster.Status {
	if s.raftNode() == nil {
		return cluster.Status{}
	}
	return s.raftNode().Status()
}

// leaderGRPC is the forwarder's Leader: where the leader serves gRPC.
//
// While no leader is known (an election is under way, or this server has
// not heard from the new leader yet) it waits up to leaderWait for one,
// so that a call made during a failover is forwarded rather than refused.
func (s *Server) leaderGRPC() (string, bool, error) {
	n := s.raftNode()
	if n == nil {
		return "", false, cluster.ErrNoLeader
	}
	deadline := time.Now().Add(leaderWait)
	for {
		addr, self, err := n.LeaderGRPC()
		if !errors.Is(err, cluster.ErrNoLeader) || time.Now().After(deadline) {
			return addr, self, err
		}
		select {
		case <-s.draining.Done():
			return addr, self, err
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// leaderWait bounds how long a call waits for a leader to be known: about
// two elections with the default timeouts.
const leaderWait = 3 * time.Second

// clusterNodeOf is what ClusterService serves: the server's node, or the
// one a test put in cfg.
func (s *Server) clusterNodeOf(cfg Config) clusterNode {
	if cfg.clusterNode != nil {
		return cfg.clusterNode
	}
	return serverNode{s}
}

// serverNode is the server's cluster.Node as ClusterService sees it; it
// answers errNoCluster until Start opened the node.
type serverNode struct{ s *Server }

func (sn serverNode) node() (*cluster.Node, error) {
	if n := sn.s.raftNode(); n != nil {
		return n, nil
	}
	return nil, errNoCluster
}

func (sn serverNode) Status() clusterStatus {
	n, err := sn.node()
	if err != nil {
		return clusterStatus{State: "shutdown", LastContact: -1}
	}
	st := n.Status()
	out := clusterStatus{
		ID: n.ID(), RaftAddr: n.Addr(), GRPCAddr: sn.s.lis.Addr().String(),
		State: st.State, Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
		LastContact: st.LastContact, LeaderID: st.LeaderID,
	}
	if st.State != "leader" && st.LastContact == 0 {
		out.LastContact = -1 // never heard from a leader
	}
	if addr, _, err := n.LeaderGRPC(); err == nil {
		out.LeaderGRPC = addr
	}
	return out
}

func (sn serverNode) Members() ([]clusterMember, error) {
	n, err := sn.node()
	if err != nil {
		return nil, err
	}
	ms, err := n.Members()
	if err != nil {
		return nil, err
	}
	out := make([]clusterMember, len(ms))
	for i, m := range ms {
		out[i] = clusterMember{ID: m.ID, RaftAddr: m.RaftAddr, GRPCAddr: m.GRPCAddr, Suffrage: m.Suffrage, Leader: m.Leader}
	}
	return out, nil
}

func (sn serverNode) AddVoter(ctx context.Context, id, raftAddr, grpcAddr string) error {
	n, err := sn.node()
	if err != nil {
		return err
	}
	return n.AddVoter(ctx, id, raftAddr, grpcAddr)
}

func (sn serverNode) RemoveServer(ctx context.Context, id string) error {
	n, err := sn.node()
	if err != nil {
		return err
	}
	return n.RemoveServer(ctx, id)
}

func (sn serverNode) TransferLeadership(ctx context.Context, id string) error {
	n, err := sn.node()
	if err != nil {
		return err
	}
	return n.TransferLeadership(ctx, id)
}

// joinCluster asks the server at s.cfg.Join (any member: a follower
// forwards the call to the leader) to add this server as a voter, again
// and again until it did or the server stops. Adding a member again with
// the same addresses changes nothing, so a restart that joins again is
// harmless.
func (s *Server) joinCluster() {
	conn, err := grpc.NewClient(s.cfg.Join, memberDialOptions(s.cfg)...)
	if err != nil {
		s.log.Error("join the cluster", "join", s.cfg.Join, "err", err)
		return
	}
	defer conn.Close()
	c := pb.NewClusterServiceClient(conn)
	req := &pb.AddVoterRequest{Id: s.raftNode().ID(), RaftAddress: s.raftNode().Addr(), GrpcAddress: s.lis.Addr().String()}
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		ctx, cancel := context.WithTimeout(s.draining, 10*time.Second)
		_, err := c.AddVoter(ctx, req)
		cancel()
		if err == nil {
			s.log.Info("joined the cluster", "join", s.cfg.Join, "node", req.Id)
			return
		}
		s.log.Warn("joining the cluster failed; retrying", "join", s.cfg.Join, "err", err, "retry_in", wait)
		select {
		case <-s.draining.Done():
			return
		case <-time.After(wait):
		}
	}
}

// A read asks for the leader's latest state with the metadata
// client.ConsistencyHeader set to client.LinearizableRead: a follower
// forwards it to the leader, which answers only once it confirmed it
// still leads and applied everything committed before the call (raft's
// read index). Without it, a server answers a read from its own copy,
// which a follower applies a little behind the leader.

// wantsLinearizable reports whether the call asked for a linearizable
// read.
func wantsLinearizable(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return slices.Contains(md.Get(client.ConsistencyHeader), client.LinearizableRead)
}

// servedHere is the forwarder's Local: reads are served by the server
// called, unless they ask for a linearizable read on a follower.
func (s *Server) servedHere(ctx context.Context, method string) bool {
	if !forward.IsRead(method) {
		return false
	}
	return !wantsLinearizable(ctx) || s.raftNode() == nil || s.raftNode().IsLeader()
}

// readBarrier makes a linearizable read on the leader wait for raft's
// read index before the handler reads.
func (s *Server) readBarrier(ctx context.Context, method string) error {
	if !forward.IsRead(method) || !wantsLinearizable(ctx) || s.raftNode() == nil {
		return nil
	}
	return s.raftNode().ReadBarrier(ctx)
}

func (s *Server) linearizableUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.readBarrier(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) linearizableStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := s.readBarrier(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// raftNode is this server's member of the cluster's log, nil before Start.
func (s *Server) raftNode() *cluster.Node { return s.nodeP.Load() }
