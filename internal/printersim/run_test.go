package printersim_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/internal/printersim"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Helper(); w.t.Log(string(p)); return len(p), nil }

func testLogger(tb testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// mustServer starts a server on addr with the bbolt file db; it stops at
// the end of the test (Stop is idempotent, so a test may stop it earlier).
func mustServer(tb testing.TB, addr, db string, clk clock.Clock) *server.Server {
	tb.Helper()
	// Every printer dials from 127.0.0.1, which the server takes for one
	// client: lift the per-client limits (64 streams, 1,000 connections)
	// that a farm of printers on their own addresses never meets.
	s, err := server.New(context.Background(), server.Config{Addr: addr, DB: db, Logger: testLogger(tb), Clock: clk,
		MaxStreamsPerClient: -1, MaxConnectionsPerIP: -1})
	if err != nil {
		tb.Fatalf("server.New: %v", err)
	}
	if err := s.Start(context.Background(), nil); err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() { s.Stop(context.Background()) })
	return s
}

// mustClient dials addr with a short reconnect backoff, so that printers
// find a restarted server quickly.
func mustClient(tb testing.TB, addr string) *client.Client {
	tb.Helper()
	bc := backoff.DefaultConfig
	bc.BaseDelay, bc.MaxDelay = 20*time.Millisecond, 200*time.Millisecond
	c, err := client.Dial(addr, grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: time.Second}))
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

// events collects a simulation's events on a channel.
func events() (chan printersim.Event, func(printersim.Event)) {
	ch := make(chan printersim.Event, 4096)
	return ch, func(ev printersim.Event) { ch <- ev }
}

// await reads events until cond holds, failing the test after a minute.
func await(t *testing.T, ch <-chan printersim.Event, what string, cond func(printersim.Event) bool) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case ev := <-ch:
			t.Log(ev)
			if cond(ev) {
				return
			}
		case <-timeout:
			t.Fatalf("no %s within a minute", what)
		}
	}
}

func submit(t *testing.T, c *client.Client, req *pb.SubmitOrderRequest) []string {
	t.Helper()
	resp, err := c.Devices.SubmitOrder(t.Context(), req)
	if err != nil {
		t.Fatalf("SubmitOrder %v: %v", req, err)
	}
	var ids []string
	for _, j := range resp.GetJobs() {
		ids = append(ids, j.GetId())
	}
	return ids
}

// TestFakeClock runs one printer and one operator on a fake clock: the
// print lasts an hour of it, and nothing finishes until the clock moves.
func TestFakeClock(t *testing.T) {
	dir := t.TempDir()
	s := mustServer(t, "127.0.0.1:0", filepath.Join(dir, "dfsmr.db"), nil)
	c := mustClient(t, s.Addr())
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ch, on := events()
	fleet := printersim.NewFleet("p", 1, printersim.Profile{PrintTime: time.Hour, PrintJitter: -1}, 1)
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 2)
	go func() {
		done <- fleet.Run(ctx, printersim.Link{Client: c, Pool: "lab", Clock: fake, OnEvent: on}, nil)
	}()
	op := &printersim.Operator{Client: c, FromSeq: 1, Clock: fake, OnEvent: on}
	go func() { done <- op.Run(ctx) }()
	await(t, ch, "connection", func(ev printersim.Event) bool { return ev.Kind == printersim.EventConnected })

	jobs := submit(t, c, &pb.SubmitOrderRequest{OrderId: "o", Model: "benchy", Quantity: 1, Pool: "lab"})
	await(t, ch, "print", func(ev printersim.Event) bool {
		return ev.Kind == printersim.EventPrinting && ev.Job == jobs[0] && ev.Detail == "benchy"
	})
	fake.Advance(time.Hour)
	await(t, ch, "finished print", func(ev printersim.Event) bool { return ev.Kind == printersim.EventFinished })
	// The operator's acknowledgment and the printer's done race.
	seen := map[printersim.EventKind]bool{}
	await(t, ch, "retrieval and cleared bed", func(ev printersim.Event) bool {
		seen[ev.Kind] = seen[ev.Kind] || ev.Job == jobs[0]
		return seen[printersim.EventRetrieved] && seen[printersim.EventCleared]
	})
	stop()
	for range 2 {
		if err := <-done; err != nil && err != context.Canceled {
			t.Fatal(err)
		}
	}
	if p := fleet.Printers[0]; p.Node() != printersim.NodeReady || p.Job() != "" {
		t.Fatalf("printer ends in %s with job %q", p.Node(), p.Job())
	}
}

// TestFinishesOffline loses the server mid-print: the printer keeps
// printing, finishes while offline, and on reconnect its first report is
// reconciled (the job awaits retrieval, the operator retrieves it, the
// printer is told done).
func TestFinishesOffline(t *testing.T) {
	addr, db := freeAddr(t), filepath.Join(t.TempDir(), "dfsmr.db")
	s := mustServer(t, addr, db, nil)
	c := mustClient(t, addr)
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ch, on := events()
	fleet := printersim.NewFleet("p", 1, printersim.Profile{PrintTime: time.Hour, PrintJitter: -1}, 1)
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 2)
	go func() {
		done <- fleet.Run(ctx, printersim.Link{Client: c, Pool: "lab", Clock: fake,
			ReconnectDelay: time.Minute, OnEvent: on}, nil)
	}()
	op := &printersim.Operator{Client: c, FromSeq: 1, Clock: fake, OnEvent: on}
	go func() { done <- op.Run(ctx) }()
	await(t, ch, "connection", func(ev printersim.Event) bool { return ev.Kind == printersim.EventConnected })
	jobs := submit(t, c, &pb.SubmitOrderRequest{OrderId: "o", Model: "benchy", Quantity: 1, Pool: "lab"})
	await(t, ch, "print", func(ev printersim.Event) bool { return ev.Kind == printersim.EventPrinting })

	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	await(t, ch, "disconnection", func(ev printersim.Event) bool { return ev.Kind == printersim.EventDisconnected })
	mustServer(t, addr, db, nil)
	// The printer waits a minute of the fake clock before it tries again;
	// move the clock once that timer is armed: two hours first, then a
	// minute after each failed try (the connection may not have noticed
	// the new server yet).
	later := func(d time.Duration) {
		for fake.Timers() == 0 {
			runtime.Gosched()
		}
		fake.Advance(d)
	}
	later(2 * time.Hour)
	var order []printersim.EventKind
	await(t, ch, "cleared bed", func(ev printersim.Event) bool {
		if ev.Kind == printersim.EventDisconnected {
			later(time.Minute)
			return false
		}
		order = append(order, ev.Kind)
		return ev.Kind == printersim.EventCleared && ev.Job == jobs[0]
	})
	if len(order) < 2 || order[0] != printersim.EventFinished || !slices.Contains(order, printersim.EventConnected) ||
		slices.Index(order, printersim.EventConnected) > slices.Index(order, printersim.EventCleared) {
		t.Fatalf("events after the restart: %v; want the print finished offline, then a connection, then the bed cleared", order)
	}
	// The operator's acknowledgment may come before or after the printer
	// carried out done.
	if !slices.Contains(order, printersim.EventRetrieved) {
		await(t, ch, "retrieval", func(ev printersim.Event) bool { return ev.Kind == printersim.EventRetrieved && ev.Job == jobs[0] })
	}
	stop()
	for range 2 {
		if err := <-done; err != nil && err != context.Canceled {
			t.Fatal(err)
		}
	}
}
