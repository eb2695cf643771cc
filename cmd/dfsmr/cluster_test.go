package main

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// fakeCluster is a ClusterService with a fixed three-member cluster seen
// from the follower n2; it records the changes asked of it.
type fakeCluster struct {
	pb.UnimplementedClusterServiceServer
	mu   sync.Mutex
	reqs []string
}

func (f *fakeCluster) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, s)
}

func (f *fakeCluster) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

var (
	fakeLeader = &pb.ServerStatus{Id: "n1", RaftAddress: "127.0.0.1:7001", GrpcAddress: "127.0.0.1:5001",
		State: pb.RaftState_RAFT_STATE_LEADER, Term: 4, CommitIndex: 120, AppliedIndex: 120,
		LastContact: durationpb.New(0), LeaderId: "n1", LeaderGrpcAddress: "127.0.0.1:5001"}
	fakeFollower = &pb.ServerStatus{Id: "n2", RaftAddress: "127.0.0.1:7002", GrpcAddress: "127.0.0.1:5002",
		State: pb.RaftState_RAFT_STATE_FOLLOWER, Term: 4, CommitIndex: 120, AppliedIndex: 117,
		LastContact: durationpb.New(42*time.Millisecond + 300*time.Microsecond), LeaderId: "n1", LeaderGrpcAddress: "127.0.0.1:5001"}
)

func (f *fakeCluster) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{Server: fakeFollower}, nil
}

func (f *fakeCluster) Members(context.Context, *pb.MembersRequest) (*pb.MembersResponse, error) {
	return &pb.MembersResponse{Members: []*pb.Member{
		{Id: "n1", RaftAddress: "127.0.0.1:7001", GrpcAddress: "127.0.0.1:5001", Suffrage: pb.Suffrage_SUFFRAGE_VOTER, Leader: true, Reachable: true, Status: fakeLeader},
		{Id: "n2", RaftAddress: "127.0.0.1:7002", GrpcAddress: "127.0.0.1:5002", Suffrage: pb.Suffrage_SUFFRAGE_VOTER, Reachable: true, Status: fakeFollower},
		{Id: "n3", RaftAddress: "127.0.0.1:7003", GrpcAddress: "127.0.0.1:5003", Suffrage: pb.Suffrage_SUFFRAGE_NONVOTER,
			Error: "UNAVAILABLE: connection refused\x1b[2J"},
	}}, nil
}

func (f *fakeCluster) AddVoter(_ context.Context, req *pb.AddVoterRequest) (*pb.AddVoterResponse, error) {
	f.record("add " + req.GetId() + " " + req.GetRaftAddress() + " " + req.GetGrpcAddress())
	return &pb.AddVoterResponse{}, nil
}

func (f *fakeCluster) RemoveServer(_ context.Context, req *pb.RemoveServerRequest) (*pb.RemoveServerResponse, error) {
	if req.GetId() != "n3" {
		return nil, status.Errorf(codes.NotFound, "%q: not a member of the cluster", req.GetId())
	}
	f.record("remove " + req.GetId())
	return &pb.RemoveServerResponse{}, nil
}

func (f *fakeCluster) TransferLeadership(_ context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	f.record("transfer " + req.GetId())
	return &pb.TransferLeadershipResponse{}, nil
}

// mustFakeCluster serves a fakeCluster on a loopback port and returns a
// CLI pointed at it.
func mustFakeCluster(t *testing.T) (*cli, *fakeCluster) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCluster{}
	srv := grpc.NewServer()
	pb.RegisterClusterServiceServer(srv, f)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return &cli{t: t, addr: lis.Addr().String(), dir: t.TempDir()}, f
}

func TestClusterCommands(t *testing.T) {
	c, f := mustFakeCluster(t)

	out := c.ok("cluster", "status")
	for _, want := range []string{"id             n2\n", "state          follower\n", "applied index  117\n",
		"last contact   42ms ago\n", "leader         n1 at 127.0.0.1:5001\n", "raft address   127.0.0.1:7002\n"} {
		contains(t, out, want)
	}

	ls := lines(c.ok("cluster", "members"))
	want := []string{
		"ID  ROLE      ADDRESS         RAFT            APPLIED  LAST CONTACT  NOTE",
		"n1  leader    127.0.0.1:5001  127.0.0.1:7001  120      -",
		"n2  follower  127.0.0.1:5002  127.0.0.1:7002  117      42ms ago",
		// The error text is the member's: escaped.
		`n3  nonvoter  127.0.0.1:5003  127.0.0.1:7003  -        -             unreachable: UNAVAILABLE: connection refused\x1b[2J`,
	}
	for i := range ls {
		ls[i] = strings.TrimRight(ls[i], " ")
	}
	if !slices.Equal(ls, want) {
		t.Fatalf("cluster members:\n%s\nwant:\n%s", strings.Join(ls, "\n"), strings.Join(want, "\n"))
	}

	contains(t, c.ok("cluster", "add", "n4", "127.0.0.1:7004", "127.0.0.1:5004"), "added n4 (raft 127.0.0.1:7004, gRPC 127.0.0.1:5004) as a voter")
	contains(t, c.ok("cluster", "remove", "n3"), "removed n3")
	contains(t, c.ok("cluster", "transfer"), "leadership handed over\n")
	contains(t, c.ok("cluster", "transfer", "n2"), "leadership handed over to n2\n")
	c.fails(exitFailed, []string{`dfsmr: NOT_FOUND: "n9": not a member of the cluster`}, "cluster", "remove", "n9")
	c.fails(exitUsage, []string{"accepts 3 arg(s), received 1"}, "cluster", "add", "n4")
	c.fails(exitUsage, []string{"accepts at most 1 arg(s), received 2"}, "cluster", "transfer", "n2", "n3")

	wantReqs := []string{"add n4 127.0.0.1:7004 127.0.0.1:5004", "remove n3", "transfer ", "transfer n2"}
	if got := f.requests(); !slices.Equal(got, wantReqs) {
		t.Fatalf("the server got %q, want %q", got, wantReqs)
	}
}

// TestClusterCompletion: remove and transfer complete member ids, asked of
// the server.
func TestClusterCompletion(t *testing.T) {
	c, _ := mustFakeCluster(t)
	for _, cmd := range []string{"remove", "transfer"} {
		if got, directive := c.completions("cluster", cmd, ""); !slices.Equal(got, []string{"n1", "n2", "n3"}) || directive != ":4" {
			t.Errorf("complete cluster %s: %q %s, want the member ids, no files (:4)", cmd, got, directive)
		}
		if got, _ := c.completions("cluster", cmd, "n1", ""); len(got) != 0 {
			t.Errorf("complete cluster %s n1 <tab>: %q, want nothing", cmd, got)
		}
	}
}
