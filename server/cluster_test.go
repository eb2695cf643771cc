package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// freePort returns a loopback address nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// threeNodes starts a server alone, then two that join it through it.
func threeNodes(t *testing.T) []*testEnv {
	t.Helper()
	n1 := mustServer(t, server.Config{NodeID: "n1", RaftAddr: freePort(t)})
	envs := []*testEnv{n1}
	for _, id := range []string{"n2", "n3"} {
		envs = append(envs, mustServer(t, server.Config{NodeID: id, RaftAddr: freePort(t), Join: n1.srv.Addr()}))
	}
	for _, e := range envs {
		waitMembers(t, e, 3)
	}
	return envs
}

// waitMembers waits until env's server sees n members, every one with a
// gRPC address, and a leader.
func waitMembers(t *testing.T, env *testEnv, n int) {
	t.Helper()
	c := pb.NewClusterServiceClient(env.conn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := c.Members(t.Context(), &pb.MembersRequest{})
		if err == nil && len(resp.GetMembers()) == n && !slices.ContainsFunc(resp.GetMembers(), func(m *pb.Member) bool { return m.GetGrpcAddress() == "" }) &&
			slices.ContainsFunc(resp.GetMembers(), func(m *pb.Member) bool { return m.GetLeader() }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: members %v, %v; want %d with addresses and a leader", env.srv.Addr(), resp.GetMembers(), err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// changelog reads every change env's server has, up to its head.
func changelog(t *testing.T, env *testEnv) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	stream, err := env.changes.Changes(ctx, &pb.ChangesRequest{FromSeq: 1, StopAtHead: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: changes after %d: %v", env.srv.Addr(), len(out), err)
		}
		c := resp.GetChange()
		out = append(out, fmt.Sprintf("%d %s %s %s %s", c.GetSeq(), c.GetKind(), c.GetInstance(), c.GetToNode(), c.GetTime().AsTime().Format(time.RFC3339Nano)))
	}
}

// sameChangelog waits until every server in envs has the changelog want.
func sameChangelog(t *testing.T, envs []*testEnv, want []string) {
	t.Helper()
	for _, env := range envs {
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := changelog(t, env)
			if slices.Equal(got, want) {
				break
			}
			if time.Now().After(deadline) || len(got) > len(want) {
				t.Fatalf("%s has %d changes, the leader %d; first difference at %d", env.srv.Addr(), len(got), len(want), firstDiff(got, want))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestClusterOfThree forms a cluster by joining, writes through every
// server (followers forward to the leader) and checks that every server
// holds the same changelog; then it stops the leader, and the other two
// elect a new one, take writes through either of them, and keep one
// changelog.
func TestClusterOfThree(t *testing.T) {
	envs := threeNodes(t)
	ctx := t.Context()
	// start starts id through env, retrying UNAVAILABLE as clients do (a
	// leader stepping down under load answers it; a start is idempotent).
	start := func(env *testEnv, id string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "report"})
			if err == nil {
				return
			}
			if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
				t.Fatalf("StartInstance %s on %s: %v", id, env.srv.Addr(), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for i := range 30 {
		start(envs[i%3], fmt.Sprintf("a%02d", i))
	}
	leader := whoLeads(t, envs)
	// A linearizable read through a follower sees a write the leader
	// just acknowledged.
	for i := range 20 {
		id := fmt.Sprintf("l%02d", i)
		start(envs[leader], id)
		lin := metadata.AppendToOutgoingContext(ctx, client.ConsistencyHeader, client.LinearizableRead)
		if _, err := envs[(leader+1+i%2)%3].instances.GetInstance(lin, &pb.GetInstanceRequest{Id: id}); err != nil {
			t.Fatalf("linearizable read of %s through a follower: %v", id, err)
		}
	}
	want := changelog(t, envs[leader])
	sameChangelog(t, envs, want)

	// A worker leases through a follower; the lease's token is the
	// leader's.
	follower := envs[(leader+1)%3]
	ready, err := follower.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "report"})
	if err != nil || ready.GetLease().GetToken() == 0 {
		t.Fatalf("Ready through a follower: %v, %v", ready, err)
	}

	envs[leader].stop(t)
	rest := slices.Delete(slices.Clone(envs), leader, leader+1)
	began := time.Now()
	next := whoLeads(t, rest)
	t.Logf("new leader after %v", time.Since(began))
	for i := range 10 {
		start(rest[i%2], fmt.Sprintf("b%02d", i))
	}
	if _, err := rest[(next+1)%2].work.Transition(ctx, &pb.TransitionRequest{Id: ready.GetInstance().GetId(), Token: ready.GetLease().GetToken(), Transition: "ok"}); err != nil {
		t.Fatalf("Transition with the old leader's lease, through the new follower: %v", err)
	}
	want = changelog(t, rest[next])
	if len(want) < 60 {
		t.Fatalf("the new leader has %d changes, want the 50 + 10 starts and more", len(want))
	}
	sameChangelog(t, rest, want)
}

// whoLeads returns the index of the server that leads.
func whoLeads(t *testing.T, envs []*testEnv) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for i, e := range envs {
			if e == nil {
				continue
			}
			resp, err := pb.NewClusterServiceClient(e.conn).Status(t.Context(), &pb.StatusRequest{})
			if err == nil && resp.GetServer().GetState() == pb.RaftState_RAFT_STATE_LEADER {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestJoinCatchesUpFromSnapshot loads a server whose log keeps little
// (small segments, frequent snapshots), then adds a server: the leader's
// log no longer holds the start, so the new server takes a snapshot of
// the state, then the log after it, and serves the same changelog.
func TestJoinCatchesUpFromSnapshot(t *testing.T) {
	tiny := func(c server.Config) server.Config {
		c.RaftSnapshotThreshold, c.RaftSnapshotInterval, c.RaftTrailingLogs, c.RaftSegmentSize = 32, 50*time.Millisecond, 8, 4096
		return c
	}
	n1 := mustServer(t, tiny(server.Config{NodeID: "n1", RaftAddr: freePort(t)}))
	ctx := t.Context()
	for i := range 200 {
		if _, err := n1.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprintf("s%03d", i), Machine: "report"}); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for a snapshot that dropped the log's start.
	deadline := time.Now().Add(20 * time.Second)
	for {
		entries, _ := os.ReadDir(filepath.Join(n1.db+".raft", "snapshots"))
		if len(entries) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no snapshot in 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var logs syncBuffer
	n2 := mustServer(t, tiny(server.Config{NodeID: "n2", RaftAddr: freePort(t), Join: n1.srv.Addr(),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}))
	waitMembers(t, n2, 2)
	for i := range 20 {
		if _, err := n2.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprintf("t%02d", i), Machine: "report"}); err != nil {
			t.Fatal(err)
		}
	}
	want := changelog(t, n1)
	sameChangelog(t, []*testEnv{n2}, want)
	if !strings.Contains(logs.String(), `msg="state restored from a snapshot"`) {
		t.Fatal("the new server caught up from the log: the test needs it to take a snapshot")
	}
}

// TestPrinterOnOneServerOrderThroughAnother connects a printer to one
// follower and submits an order through the other: the printer gets its
// print command at once, without speaking (its stream is forwarded to the
// leader, which pokes it on the commit), and its progress shows on every
// server.
func TestPrinterOnOneServerOrderThroughAnother(t *testing.T) {
	envs := threeNodes(t)
	leader := whoLeads(t, envs)
	a, b := envs[(leader+1)%3], envs[(leader+2)%3]
	p := newPrinter(t, a, "p1", "lab")
	wantNoCmd(t, p.connect())
	jobs := order(t, b, &pb.SubmitOrderRequest{OrderId: "o", Model: "benchy", Quantity: 1, Pool: "lab"})
	cmd := p.pushed()
	wantCmd(t, cmd, "print", jobs[0].GetId())
	wantNoCmd(t, p.carry(cmd))
	lin := metadata.AppendToOutgoingContext(t.Context(), client.ConsistencyHeader, client.LinearizableRead)
	for _, env := range envs {
		resp, err := env.instances.GetInstance(lin, &pb.GetInstanceRequest{Id: jobs[0].GetId()})
		if err != nil || resp.GetInstance().GetNode() != "printing" {
			t.Fatalf("%s: job %v, %v; want printing", env.srv.Addr(), resp.GetInstance(), err)
		}
	}
}
