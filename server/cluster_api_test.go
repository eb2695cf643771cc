package server_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/auth"
	"github.com/dfsmr/dfsmr/server/cluster"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// fakeNode stands for the Raft node: a configuration in memory, the calls
// it got, and the error its write calls return.
type fakeNode struct {
	mu      sync.Mutex
	status  server.ClusterStatus
	members []server.ClusterMember
	err     error
	calls   []string
}

func (n *fakeNode) Status() server.ClusterStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status
}

func (n *fakeNode) Members() ([]server.ClusterMember, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.members), nil
}

func (n *fakeNode) AddVoter(_ context.Context, id, raftAddr, grpcAddr string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, "add "+id+" "+raftAddr+" "+grpcAddr)
	if n.err != nil {
		return n.err
	}
	n.members = slices.DeleteFunc(n.members, func(m server.ClusterMember) bool { return m.ID == id })
	n.members = append(n.members, server.ClusterMember{ID: id, RaftAddr: raftAddr, GRPCAddr: grpcAddr, Suffrage: "Voter"})
	return nil
}

func (n *fakeNode) RemoveServer(_ context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, "remove "+id)
	if n.err != nil {
		return n.err
	}
	n.members = slices.DeleteFunc(n.members, func(m server.ClusterMember) bool { return m.ID == id })
	return nil
}

func (n *fakeNode) TransferLeadership(_ context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, "transfer "+id)
	return n.err
}

func (n *fakeNode) set(f func(n *fakeNode)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f(n)
}

func (n *fakeNode) called() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.calls)
}

// mustClusterServer is a real server whose ClusterService serves node.
func mustClusterServer(t *testing.T, node *fakeNode, cfg server.Config) (*testEnv, pb.ClusterServiceClient) {
	t.Helper()
	env := mustServer(t, server.WithClusterNode(cfg, node))
	return env, pb.NewClusterServiceClient(env.conn)
}

// leaderOf is a fake leader "n1" with followers n2 (voter) and n3
// (nonvoter).
func leaderOf() *fakeNode {
	return &fakeNode{
		status: server.ClusterStatus{ID: "n1", RaftAddr: "127.0.0.1:7001", GRPCAddr: "127.0.0.1:5001", State: "Leader",
			Term: 3, CommitIndex: 40, AppliedIndex: 39, LeaderID: "n1", LeaderGRPC: "127.0.0.1:5001"},
		members: []server.ClusterMember{
			{ID: "n1", RaftAddr: "127.0.0.1:7001", GRPCAddr: "127.0.0.1:5001", Suffrage: "Voter", Leader: true},
			{ID: "n2", RaftAddr: "127.0.0.1:7002", GRPCAddr: "127.0.0.1:5002", Suffrage: "Voter"},
			{ID: "n3", RaftAddr: "127.0.0.1:7003", GRPCAddr: "127.0.0.1:5003", Suffrage: "Nonvoter"},
		},
	}
}

func TestClusterStatus(t *testing.T) {
	node := leaderOf()
	_, cl := mustClusterServer(t, node, server.Config{})
	ctx := t.Context()
	resp, err := cl.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.ServerStatus{Id: "n1", RaftAddress: "127.0.0.1:7001", GrpcAddress: "127.0.0.1:5001",
		State: pb.RaftState_RAFT_STATE_LEADER, Term: 3, CommitIndex: 40, AppliedIndex: 39,
		LastContact: durationpb.New(0), LeaderId: "n1", LeaderGrpcAddress: "127.0.0.1:5001"}
	if !proto.Equal(resp.GetServer(), want) {
		t.Fatalf("leader's status:\n got %v\nwant %v", resp.GetServer(), want)
	}

	for _, tc := range []struct {
		state   string
		contact time.Duration
		want    pb.RaftState
	}{
		{"Follower", 80 * time.Millisecond, pb.RaftState_RAFT_STATE_FOLLOWER},
		{"candidate", -1, pb.RaftState_RAFT_STATE_CANDIDATE},
		{"Shutdown", -1, pb.RaftState_RAFT_STATE_SHUTDOWN},
		{"Staging", -1, pb.RaftState_RAFT_STATE_UNSPECIFIED},
	} {
		node.set(func(n *fakeNode) { n.status.State, n.status.LastContact = tc.state, tc.contact })
		resp, err := cl.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		s := resp.GetServer()
		if s.GetState() != tc.want {
			t.Errorf("state %q: %s, want %s", tc.state, s.GetState(), tc.want)
		}
		// A server that never heard from a leader has no last contact
		// (not a zero one, which is the leader's).
		if tc.contact < 0 && s.LastContact != nil || tc.contact >= 0 && s.GetLastContact().AsDuration() != tc.contact {
			t.Errorf("state %q: last contact %v, want %v", tc.state, s.LastContact, tc.contact)
		}
	}
}

// blackHole accepts connections and never answers, like a member whose
// process hangs.
func blackHole(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

// closedAddr is an address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// TestClusterMembersAsksEveryMember: Members lists the configuration in id
// order and fills in each member's own Status, asked over gRPC of the
// real servers; a member that refuses, hangs, has no address or answers
// as someone else is listed unreachable with the reason, and the hanging
// ones are waited for at once, not one after the other.
func TestClusterMembersAsksEveryMember(t *testing.T) {
	a, b, c := leaderOf(), leaderOf(), leaderOf()
	b.status = server.ClusterStatus{ID: "b", RaftAddr: "127.0.0.1:7002", State: "Follower", Term: 3, CommitIndex: 40,
		AppliedIndex: 38, LastContact: 120 * time.Millisecond, LeaderID: "a"}
	c.status = server.ClusterStatus{ID: "c", RaftAddr: "127.0.0.1:7003", State: "Follower", Term: 3, CommitIndex: 40,
		AppliedIndex: 40, LastContact: 30 * time.Millisecond, LeaderID: "a"}
	envB, _ := mustClusterServer(t, b, server.Config{})
	envC, _ := mustClusterServer(t, c, server.Config{})
	envA, cl := mustClusterServer(t, a, server.Config{})
	b.set(func(n *fakeNode) { n.status.GRPCAddr = envB.srv.Addr() })
	c.set(func(n *fakeNode) { n.status.GRPCAddr = envC.srv.Addr() })
	a.set(func(n *fakeNode) {
		n.status = server.ClusterStatus{ID: "a", RaftAddr: "127.0.0.1:7001", GRPCAddr: envA.srv.Addr(), State: "Leader",
			Term: 3, CommitIndex: 40, AppliedIndex: 40, LeaderID: "a", LeaderGRPC: envA.srv.Addr()}
		// Out of order on purpose: the response is in id order.
		n.members = []server.ClusterMember{
			{ID: "h2", RaftAddr: "127.0.0.1:7008", GRPCAddr: blackHole(t), Suffrage: "Voter"},
			{ID: "c", RaftAddr: "127.0.0.1:7003", GRPCAddr: envC.srv.Addr(), Suffrage: "Nonvoter"},
			{ID: "a", RaftAddr: "127.0.0.1:7001", GRPCAddr: envA.srv.Addr(), Suffrage: "Voter", Leader: true},
			{ID: "down", RaftAddr: "127.0.0.1:7004", GRPCAddr: closedAddr(t), Suffrage: "Voter"},
			{ID: "b", RaftAddr: "127.0.0.1:7002", GRPCAddr: envB.srv.Addr(), Suffrage: "Voter"},
			{ID: "h1", RaftAddr: "127.0.0.1:7007", GRPCAddr: blackHole(t), Suffrage: "Voter"},
			{ID: "new", RaftAddr: "127.0.0.1:7005", Suffrage: "Voter"},
			{ID: "stale", RaftAddr: "127.0.0.1:7006", GRPCAddr: envB.srv.Addr(), Suffrage: "Voter"},
		}
	})

	start := time.Now()
	resp, err := cl.Members(t.Context(), &pb.MembersRequest{})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took < server.MemberProbeTimeout || took >= 2*server.MemberProbeTimeout {
		t.Errorf("Members took %v with two hanging members: want one probe timeout (%v), the probes run at once", took, server.MemberProbeTimeout)
	}
	got := map[string]*pb.Member{}
	var ids []string
	for _, m := range resp.GetMembers() {
		ids = append(ids, m.GetId())
		got[m.GetId()] = m
	}
	if want := []string{"a", "b", "c", "down", "h1", "h2", "new", "stale"}; !slices.Equal(ids, want) {
		t.Fatalf("members %v, want %v", ids, want)
	}

	self := got["a"]
	if !self.GetReachable() || !self.GetLeader() || self.GetStatus().GetState() != pb.RaftState_RAFT_STATE_LEADER ||
		self.GetSuffrage() != pb.Suffrage_SUFFRAGE_VOTER || self.GetGrpcAddress() != envA.srv.Addr() {
		t.Errorf("the server called: %v", self)
	}
	for _, tc := range []struct {
		id       string
		suffrage pb.Suffrage
		applied  uint64
		contact  time.Duration
	}{
		{"b", pb.Suffrage_SUFFRAGE_VOTER, 38, 120 * time.Millisecond},
		{"c", pb.Suffrage_SUFFRAGE_NONVOTER, 40, 30 * time.Millisecond},
	} {
		m := got[tc.id]
		if !m.GetReachable() || m.GetError() != "" || m.GetLeader() || m.GetSuffrage() != tc.suffrage ||
			m.GetStatus().GetState() != pb.RaftState_RAFT_STATE_FOLLOWER || m.GetStatus().GetAppliedIndex() != tc.applied ||
			m.GetStatus().GetLastContact().AsDuration() != tc.contact || m.GetStatus().GetLeaderId() != "a" {
			t.Errorf("member %s: %v", tc.id, m)
		}
	}
	for id, want := range map[string]string{
		"down":  "UNAVAILABLE",
		"h1":    "DEADLINE_EXCEEDED",
		"h2":    "DEADLINE_EXCEEDED",
		"new":   "gRPC address is not recorded",
		"stale": `is "b", not "stale"`,
	} {
		m := got[id]
		if m.GetReachable() || m.Status != nil || !strings.Contains(m.GetError(), want) {
			t.Errorf("member %s: reachable %v, status %v, error %q; want unreachable with %q", id, m.GetReachable(), m.Status, m.GetError(), want)
		}
	}
}

// TestClusterMembersPassesTheToken: with authentication on, the server
// asks the other members with the caller's token, which the members'
// shared tokens file lets in.
func TestClusterMembersPassesTheToken(t *testing.T) {
	token := map[string]string{}
	for _, p := range securePrincipals {
		token[p.name] = auth.NewToken()
	}
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	writeTokensFile(t, tokens, token)

	a, b := leaderOf(), leaderOf()
	b.status = server.ClusterStatus{ID: "b", State: "Follower", AppliedIndex: 7, LeaderID: "a"}
	envB, _ := mustClusterServer(t, b, server.Config{Tokens: tokens})
	envA := mustServer(t, server.WithClusterNode(server.Config{Tokens: tokens}, a))
	a.set(func(n *fakeNode) {
		n.status = server.ClusterStatus{ID: "a", State: "Leader", LeaderID: "a"}
		n.members = []server.ClusterMember{
			{ID: "a", GRPCAddr: envA.srv.Addr(), Suffrage: "Voter", Leader: true},
			{ID: "b", GRPCAddr: envB.srv.Addr(), Suffrage: "Voter"},
		}
	})
	c, err := client.Dial(envA.srv.Addr(), client.WithLoopbackToken(token["root"])...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Cluster.Members(t.Context(), &pb.MembersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m := resp.GetMembers()[1]; !m.GetReachable() || m.GetStatus().GetAppliedIndex() != 7 {
		t.Fatalf("member b, asked with the caller's token: %v", m)
	}
}

func TestClusterAddVoter(t *testing.T) {
	node := leaderOf()
	_, cl := mustClusterServer(t, node, server.Config{})
	ctx := t.Context()
	ok := &pb.AddVoterRequest{Id: "n4", RaftAddress: "10.0.0.4:7000", GrpcAddress: "node4.example:5003"}
	long := strings.Repeat("a", 250) + ".test:1"
	for _, tc := range []struct {
		edit  func(r *pb.AddVoterRequest)
		field string
	}{
		{func(r *pb.AddVoterRequest) { r.Id = "" }, "id"},
		{func(r *pb.AddVoterRequest) { r.Id = "n 4" }, "id"},
		{func(r *pb.AddVoterRequest) { r.Id = strings.Repeat("n", 65) }, "id"},
		{func(r *pb.AddVoterRequest) { r.Id = "n4\u202e" }, "id"},
		{func(r *pb.AddVoterRequest) { r.RaftAddress = "" }, "raft_address"},
		{func(r *pb.AddVoterRequest) { r.RaftAddress = "10.0.0.4" }, "raft_address"},
		{func(r *pb.AddVoterRequest) { r.RaftAddress = ":7000" }, "raft_address"},
		{func(r *pb.AddVoterRequest) { r.RaftAddress = "0.0.0.0:7000" }, "raft_address"},
		{func(r *pb.AddVoterRequest) { r.RaftAddress = "[::]:7000" }, "raft_address"},
		{func(r *pb.AddVoterRequest) { r.RaftAddress = "10.0.0.4:0" }, "raft_address"},
		{func(r *pb.AddVoterRequest) { r.RaftAddress = "10.0.0.4:70000" }, "raft_address"},
		{func(r *pb.AddVoterRequest) { r.RaftAddress = "10.0.0.4:http" }, "raft_address"},
		{func(r *pb.AddVoterRequest) { r.RaftAddress = long }, "raft_address"},
		{func(r *pb.AddVoterRequest) { r.GrpcAddress = "" }, "grpc_address"},
		{func(r *pb.AddVoterRequest) { r.GrpcAddress = "node4\x1b:5003" }, "grpc_address"},
	} {
		req := proto.Clone(ok).(*pb.AddVoterRequest)
		tc.edit(req)
		_, err := cl.AddVoter(ctx, req)
		st := wantCode(t, err, codes.InvalidArgument)
		if f := violationField(st); f != tc.field {
			t.Errorf("AddVoter(%v): violation of %q, want %q (%v)", req, f, tc.field, err)
		}
	}
	if calls := node.called(); len(calls) > 0 {
		t.Fatalf("the node was called with bad input: %v", calls)
	}

	// An id at another address, or an address of another id: the
	// configuration would end up with a member nobody meant.
	for _, req := range []*pb.AddVoterRequest{
		{Id: "n2", RaftAddress: "10.0.0.4:7000", GrpcAddress: "10.0.0.4:5003"},
		{Id: "n4", RaftAddress: "127.0.0.1:7002", GrpcAddress: "10.0.0.4:5003"},
	} {
		_, err := cl.AddVoter(ctx, req)
		wantCode(t, err, codes.AlreadyExists)
	}
	if _, err := cl.AddVoter(ctx, ok); err != nil {
		t.Fatal(err)
	}
	// Again (a retried join), and the nonvoter n3 at its address: both go
	// to the node, which records the gRPC address and promotes n3.
	if _, err := cl.AddVoter(ctx, ok); err != nil {
		t.Fatalf("adding n4 again: %v", err)
	}
	if _, err := cl.AddVoter(ctx, &pb.AddVoterRequest{Id: "n3", RaftAddress: "127.0.0.1:7003", GrpcAddress: "127.0.0.1:5103"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AddVoter(ctx, &pb.AddVoterRequest{Id: "n_5.b-1", RaftAddress: "[fd00::5]:7000", GrpcAddress: "[::1]:5003"}); err != nil {
		t.Fatalf("IPv6 addresses: %v", err)
	}
	want := []string{"add n4 10.0.0.4:7000 node4.example:5003", "add n4 10.0.0.4:7000 node4.example:5003",
		"add n3 127.0.0.1:7003 127.0.0.1:5103", "add n_5.b-1 [fd00::5]:7000 [::1]:5003"}
	if calls := node.called(); !slices.Equal(calls, want) {
		t.Fatalf("node calls %q, want %q", calls, want)
	}
}

// violationField is the field of a status's first field violation.
func violationField(st *status.Status) string {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

func TestClusterRemoveServer(t *testing.T) {
	node := leaderOf()
	_, cl := mustClusterServer(t, node, server.Config{})
	ctx := t.Context()
	_, err := cl.RemoveServer(ctx, &pb.RemoveServerRequest{})
	if f := violationField(wantCode(t, err, codes.InvalidArgument)); f != "id" {
		t.Fatalf("violation of %q, want id", f)
	}
	_, err = cl.RemoveServer(ctx, &pb.RemoveServerRequest{Id: "n9"})
	wantCode(t, err, codes.NotFound)
	if _, err := cl.RemoveServer(ctx, &pb.RemoveServerRequest{Id: "n3"}); err != nil {
		t.Fatal(err)
	}
	// Gone: a second removal is NOT_FOUND.
	_, err = cl.RemoveServer(ctx, &pb.RemoveServerRequest{Id: "n3"})
	wantCode(t, err, codes.NotFound)
	if calls := node.called(); !slices.Equal(calls, []string{"remove n3"}) {
		t.Fatalf("node calls %q", calls)
	}
}

func TestClusterTransferLeadership(t *testing.T) {
	node := leaderOf()
	_, cl := mustClusterServer(t, node, server.Config{})
	ctx := t.Context()
	for id, want := range map[string]codes.Code{
		"n 2": codes.InvalidArgument,
		"n9":  codes.NotFound,
		"n3":  codes.FailedPrecondition, // a nonvoter
		"n1":  codes.FailedPrecondition, // the leader itself
	} {
		_, err := cl.TransferLeadership(ctx, &pb.TransferLeadershipRequest{Id: id})
		wantCode(t, err, want)
	}
	for _, id := range []string{"n2", ""} {
		if _, err := cl.TransferLeadership(ctx, &pb.TransferLeadershipRequest{Id: id}); err != nil {
			t.Fatalf("transfer to %q: %v", id, err)
		}
	}
	// Alone (n3 does not vote): no one to hand over to.
	node.set(func(n *fakeNode) { n.members = slices.Delete(n.members, 1, 2) })
	_, err := cl.TransferLeadership(ctx, &pb.TransferLeadershipRequest{})
	wantCode(t, err, codes.FailedPrecondition)
	if calls := node.called(); !slices.Equal(calls, []string{"transfer n2", "transfer "}) {
		t.Fatalf("node calls %q", calls)
	}
}

// TestClusterNotLeader: a write call that reaches a server that cannot
// make it (not the leader, and not forwarded) fails UNAVAILABLE, which
// clients retry, naming the leader when one is known.
func TestClusterNotLeader(t *testing.T) {
	node := leaderOf()
	_, cl := mustClusterServer(t, node, server.Config{})
	ctx := t.Context()
	node.set(func(n *fakeNode) { n.err = &cluster.NotLeaderError{LeaderID: "n2", LeaderAddr: "127.0.0.1:7002"} })
	_, err := cl.AddVoter(ctx, &pb.AddVoterRequest{Id: "n4", RaftAddress: "10.0.0.4:7000", GrpcAddress: "10.0.0.4:5003"})
	st := wantCode(t, err, codes.Unavailable)
	if !strings.Contains(st.Message(), "the leader is n2 at 127.0.0.1:7002") {
		t.Errorf("message %q does not name the leader", st.Message())
	}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if info.GetReason() != "NOT_LEADER" || info.GetMetadata()["leader_id"] != "n2" || info.GetMetadata()["leader_raft_address"] != "127.0.0.1:7002" {
		t.Errorf("details %v", st.Details())
	}

	node.set(func(n *fakeNode) { n.err = errors.Join(errors.New("raft: leadership lost"), cluster.ErrNotLeader) })
	_, err = cl.RemoveServer(ctx, &pb.RemoveServerRequest{Id: "n2"})
	wantCode(t, err, codes.Unavailable)
	_, err = cl.TransferLeadership(ctx, &pb.TransferLeadershipRequest{})
	wantCode(t, err, codes.Unavailable)
}
