package client_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// testLogger sends the server's logs to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Helper(); w.t.Log(string(p)); return len(p), nil }

// mustServer starts a server on addr with the bbolt file db and stops it at
// the end of the test (Stop is idempotent, so a test may stop it earlier).
func mustServer(tb testing.TB, addr, db string) *server.Server {
	tb.Helper()
	s, err := server.New(tb.Context(), server.Config{Addr: addr, DB: db, Logger: testLogger(tb)})
	if err != nil {
		tb.Fatalf("server.New: %v", err)
	}
	if err := s.Start(tb.Context(), nil); err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() { s.Stop(context.Background()) })
	return s
}

func mustClient(tb testing.TB, addr string, opts ...grpc.DialOption) *client.Client {
	tb.Helper()
	c, err := client.Dial(addr, opts...)
	if err != nil {
		tb.Fatalf("Dial: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// freeAddr returns a loopback address that was free a moment ago, so that
// a restarted server can listen where the first one did.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func startN(t *testing.T, c *client.Client, prefix string, n int) {
	t.Helper()
	for i := range n {
		_, err := c.Instances.StartInstance(t.Context(), &pb.StartInstanceRequest{
			Id: fmt.Sprintf("%s-%03d", prefix, i), Machine: "report",
		})
		if err != nil {
			t.Fatalf("StartInstance: %v", err)
		}
	}
}

// follower runs Follow in the background and hands every change over.
type follower struct {
	changes chan *pb.Change
	done    chan error
	cancel  context.CancelFunc
}

func follow(t *testing.T, c *client.Client, req *pb.ChangesRequest) *follower {
	ctx, cancel := context.WithCancel(t.Context())
	f := &follower{changes: make(chan *pb.Change, 4096), done: make(chan error, 1), cancel: cancel}
	go func() {
		f.done <- c.Follow(ctx, req, func(ch *pb.Change) error {
			f.changes <- ch
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-f.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Follow returned %v, want context.Canceled", err)
		}
	})
	return f
}

// collect receives changes until one with seq >= upto arrives.
func (f *follower) collect(t *testing.T, got []uint64, upto uint64) []uint64 {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for len(got) == 0 || got[len(got)-1] < upto {
		select {
		case ch := <-f.changes:
			got = append(got, ch.GetSeq())
		case err := <-f.done:
			t.Fatalf("Follow ended: %v", err)
		case <-timeout:
			t.Fatalf("timed out waiting for seq %d; got %v", upto, got)
		}
	}
	return got
}

func checkSeqs(t *testing.T, got []uint64, from, to uint64) {
	t.Helper()
	if uint64(len(got)) != to-from+1 {
		t.Fatalf("got %d changes %v, want seqs %d..%d", len(got), got, from, to)
	}
	for i, seq := range got {
		if seq != from+uint64(i) {
			t.Fatalf("change %d has seq %d, want %d (gap or duplicate): %v", i, seq, from+uint64(i), got)
		}
	}
}

// mustHead returns the changelog head as the server reports it: in the
// response header of a stream from now that stops at the head, which the
// server ends at once with OK.
func mustHead(t *testing.T, c *client.Client) uint64 {
	t.Helper()
	stream, err := c.Changes.Changes(t.Context(), &pb.ChangesRequest{StopAtHead: true})
	if err != nil {
		t.Fatalf("Changes: %v", err)
	}
	md, err := stream.Header()
	if err != nil {
		t.Fatalf("Header: %v", err)
	}
	if resp, err := stream.Recv(); err != io.EOF {
		t.Fatalf("Recv = %v, %v; want io.EOF at once", resp, err)
	}
	vs := md.Get(client.HeadSeqHeader)
	if len(vs) != 1 {
		t.Fatalf("header %s = %q", client.HeadSeqHeader, vs)
	}
	h, err := strconv.ParseUint(vs[0], 10, 64)
	if err != nil {
		t.Fatalf("header %s: %v", client.HeadSeqHeader, err)
	}
	return h
}

// TestFollowResumesAfterRestart stops the server under a follower, writes
// while it is away, and starts a new server on the same file and address:
// the follower sees every change once, in order.
func TestFollowResumesAfterRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		from func(head uint64) uint64
	}{
		{"from 1", func(uint64) uint64 { return 1 }},
		// From now, and the server restarts before the first change: the
		// follower must not skip what was written while it was away.
		{"from now", func(uint64) uint64 { return 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, db := freeAddr(t), filepath.Join(t.TempDir(), "dfsmr.db")
			s1 := mustServer(t, addr, db)
			c := mustClient(t, addr)
			// The writer waits for the restarted server instead of failing.
			w := mustClient(t, addr, grpc.WithDefaultCallOptions(grpc.WaitForReady(true)))
			head0 := mustHead(t, w) // the bundled machines' MACHINE_DEFINED changes
			from := tc.from(head0)
			wantFrom := from
			if from == 0 {
				wantFrom = head0 + 1
			}
			resolved := make(chan uint64, 1)
			defer client.SetTestHookResolved(func(from uint64) { resolved <- from })()
			f := follow(t, c, &pb.ChangesRequest{FromSeq: from})

			var got []uint64
			if from != 0 {
				startN(t, w, "a", 20)
				got = f.collect(t, got, mustHead(t, w))
			} else {
				// Restart only once Follow has turned "now" into a seq.
				if got := <-resolved; got != head0+1 {
					t.Fatalf("Follow resolved from_seq 0 to %d, want %d", got, head0+1)
				}
			}

			if err := s1.Stop(t.Context()); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			s2 := mustServer(t, addr, db)
			_ = s2
			startN(t, w, "b", 20) // maybe before the follower is back
			head := mustHead(t, w)
			got = f.collect(t, got, head)
			startN(t, w, "c", 5) // surely after
			head = mustHead(t, w)
			got = f.collect(t, got, head)
			checkSeqs(t, got, wantFrom, head)
		})
	}
}

func TestFollowFilterAndCallbackError(t *testing.T) {
	addr := freeAddr(t)
	mustServer(t, addr, filepath.Join(t.TempDir(), "dfsmr.db"))
	c := mustClient(t, addr)
	startN(t, c, "x", 3)

	stop := errors.New("stop")
	var got []string
	err := c.Follow(t.Context(), &pb.ChangesRequest{FromSeq: 1, Instance: "x-001"}, func(ch *pb.Change) error {
		got = append(got, ch.GetInstance()+" "+ch.GetKind().String())
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Follow = %v, want the callback's error", err)
	}
	if len(got) != 1 || got[0] != "x-001 CHANGE_KIND_STARTED" {
		t.Fatalf("got %v", got)
	}

	// A status returned by the callback is the callback's, not a reason to
	// resume.
	st := status.Error(codes.Unavailable, "callback says no")
	err = c.Follow(t.Context(), &pb.ChangesRequest{FromSeq: 1}, func(*pb.Change) error { return st })
	if err != st {
		t.Fatalf("Follow = %v, want the callback's status", err)
	}
}

func TestFollowOutOfRange(t *testing.T) {
	addr := freeAddr(t)
	mustServer(t, addr, filepath.Join(t.TempDir(), "dfsmr.db"))
	c := mustClient(t, addr)
	err := c.Follow(t.Context(), &pb.ChangesRequest{FromSeq: 1 << 40}, func(*pb.Change) error { return nil })
	if status.Code(err) != codes.OutOfRange {
		t.Fatalf("Follow = %v, want OUT_OF_RANGE", err)
	}
}

// TestFollowRetainedStartsAtTheOldestKept: once retention deleted the
// first changes, Follow from seq 1 fails with OUT_OF_RANGE naming the
// oldest kept (OldestKept), and FollowRetained delivers every change kept,
// from there.
func TestFollowRetainedStartsAtTheOldestKept(t *testing.T) {
	addr := freeAddr(t)
	s, err := server.New(t.Context(), server.Config{Addr: addr, DB: filepath.Join(t.TempDir(), "dfsmr.db"),
		Logger: testLogger(t), ChangelogRetentionCount: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	c := mustClient(t, addr)
	startN(t, c, "kept", 10)
	head := mustHead(t, c)
	if _, err := s.Engine().Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	nothing := func(*pb.Change) error { return nil }
	err = c.Follow(t.Context(), &pb.ChangesRequest{FromSeq: 1, StopAtHead: true}, nothing)
	if oldest, ok := client.OldestKept(err); !ok || oldest != head-2 {
		t.Fatalf("Follow from 1: %v; OldestKept = %d, %v, want %d", err, oldest, ok, head-2)
	}
	var got []uint64
	err = c.FollowRetained(t.Context(), &pb.ChangesRequest{FromSeq: 1, StopAtHead: true}, func(ch *pb.Change) error {
		got = append(got, ch.GetSeq())
		return nil
	})
	if err != nil {
		t.Fatalf("FollowRetained: %v", err)
	}
	checkSeqs(t, got, head-2, head)
	if _, ok := client.OldestKept(status.Error(codes.OutOfRange, "from 99 is past the head")); ok {
		t.Fatal("OldestKept took an OUT_OF_RANGE without CHANGES_COMPACTED")
	}
}

// TestFollowStopAtHead replays up to the head with a server-side filter
// whose last match is not the last change, and returns nil there.
func TestFollowStopAtHead(t *testing.T) {
	addr := freeAddr(t)
	mustServer(t, addr, filepath.Join(t.TempDir(), "dfsmr.db"))
	c := mustClient(t, addr)
	startN(t, c, "x", 3)
	head := mustHead(t, c)

	for _, tc := range []struct {
		req  *pb.ChangesRequest
		want string
	}{
		{&pb.ChangesRequest{FromSeq: 1, Instance: "x-001", StopAtHead: true}, "[x-001]"},
		// report's MACHINE_DEFINED change has no instance.
		{&pb.ChangesRequest{FromSeq: 1, Machine: "report", StopAtHead: true}, "[- x-000 x-001 x-002]"},
		{&pb.ChangesRequest{FromSeq: 1, Machine: "nope", StopAtHead: true}, "[]"},
		{&pb.ChangesRequest{FromSeq: head + 1, StopAtHead: true}, "[]"},
		{&pb.ChangesRequest{StopAtHead: true}, "[]"}, // from now: ends at once
	} {
		var got []string
		err := c.Follow(t.Context(), tc.req, func(ch *pb.Change) error {
			if ch.GetSeq() > head {
				t.Errorf("seq %d after the head %d", ch.GetSeq(), head)
			}
			got = append(got, cmp.Or(ch.GetInstance(), "-"))
			return nil
		})
		if err != nil || fmt.Sprint(got) != tc.want {
			t.Errorf("Follow(%v) = %v after %v, want nil after %s", tc.req, err, got, tc.want)
		}
	}
	err := c.Follow(t.Context(), &pb.ChangesRequest{FromSeq: head + 2, StopAtHead: true}, func(*pb.Change) error { return nil })
	if status.Code(err) != codes.OutOfRange {
		t.Fatalf("Follow(head+2) = %v, want OUT_OF_RANGE", err)
	}
}

func TestHeadAndListAll(t *testing.T) {
	addr := freeAddr(t)
	mustServer(t, addr, filepath.Join(t.TempDir(), "dfsmr.db"))
	c := mustClient(t, addr)
	h0 := mustHead(t, c)
	if h0 == 0 {
		t.Fatal("Head = 0 after the bundled machines were defined")
	}
	startN(t, c, "i", 250)
	if h := mustHead(t, c); h != h0+250 {
		t.Fatalf("Head = %d, want %d", h, h0+250)
	}

	all, err := c.ListAllInstances(t.Context(), &pb.ListInstancesRequest{Machine: "report"}, 0)
	if err != nil || len(all) != 250 {
		t.Fatalf("ListAllInstances = %d instances, %v; want 250", len(all), err)
	}
	for i, in := range all {
		if want := fmt.Sprintf("i-%03d", i); in.GetId() != want {
			t.Fatalf("instance %d is %s, want %s", i, in.GetId(), want)
		}
	}
	some, err := c.ListAllInstances(t.Context(), &pb.ListInstancesRequest{PageSize: 7}, 20)
	if err != nil || len(some) != 20 || some[19].GetId() != "i-019" {
		t.Fatalf("ListAllInstances(limit 20) = %d instances, %v", len(some), err)
	}
	ms, err := c.ListAllMachines(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.GetId())
	}
	if fmt.Sprint(ids) != "[crawler print_job printer report]" {
		t.Fatalf("ListAllMachines = %v", ids)
	}
	if ms, err := c.ListAllMachines(t.Context(), 2); err != nil || len(ms) != 2 {
		t.Fatalf("ListAllMachines(2) = %d, %v", len(ms), err)
	}
}

// TestLoopbackTokenRefusesOtherHosts dials a non-loopback address with
// WithLoopbackToken: the call fails before any connection (the address is
// a documentation one nobody answers) with ErrNotLoopback in its message.
// cmd/dfsmr's TestTokenOnPlaintextLoopback shows a loopback server getting
// the token.
func TestLoopbackTokenRefusesOtherHosts(t *testing.T) {
	c, err := client.Dial("192.0.2.7:5003", client.WithLoopbackToken("secret")...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err = c.Machines.ListMachines(ctx, &pb.ListMachinesRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), client.ErrNotLoopback.Error()) {
		t.Fatalf("ListMachines on 192.0.2.7 = %v, want UNAVAILABLE: %v", err, client.ErrNotLoopback)
	}
}
