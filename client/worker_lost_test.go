package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// dropReplies returns a client to addr whose every other call of method
// reaches the server and is applied, but whose reply is lost: the caller
// sees UNAVAILABLE, as after a connection that broke at that moment.
func dropReplies(t *testing.T, addr, method string) (*client.Client, *atomic.Int64) {
	var calls, dropped atomic.Int64
	c := mustClient(t, addr, grpc.WithChainUnaryInterceptor(func(ctx context.Context, m string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, m, req, reply, cc, opts...)
		if m == method && err == nil && calls.Add(1)%2 == 1 {
			dropped.Add(1)
			return status.Error(codes.Unavailable, "reply lost")
		}
		return err
	}))
	return c, &dropped
}

// TestWorkerLostRepliesWithContinuation: the replies of TransitionBatch
// calls are lost after the server applied them, continuation leases
// included. The worker retries with the same request ids and is answered
// with the continued leases the first calls granted, so every item goes
// on at once: no step is refused as stale, and no lease is left to time
// out (the leases here last a minute, far longer than the test waits).
func TestWorkerLostRepliesWithContinuation(t *testing.T) {
	const chainYAML = `id: job
nodes:
  work:
    start: true
    timeout: 1m
    transitions: {ok: more}
  more:
    timeout: 1m
    transitions: {ok: last}
  last:
    timeout: 1m
    transitions: {ok: done}
  done: {final: true}
`
	c, _, addr, _ := jobServer(t, chainYAML)
	for i := range 9 {
		if _, err := c.Instances.StartInstance(t.Context(), &pb.StartInstanceRequest{Id: fmt.Sprint("k-", i), Machine: "job"}); err != nil {
			t.Fatal(err)
		}
	}
	lossy, dropped := dropReplies(t, addr, pb.WorkService_TransitionBatch_FullMethodName)
	w := newWorker(t, lossy, client.WorkerOptions{Concurrency: 4, Continue: true})
	for _, node := range []string{"work", "more", "last"} {
		w.Handle("job", node, func(context.Context, *pb.Instance) (client.Result, error) {
			return client.Result{Transition: "ok"}, nil
		})
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		id := "j-1"
		if i > 0 {
			id = fmt.Sprint("k-", i-1)
		}
		waitInstance(t, c, id, func(in *pb.Instance) bool { return in.GetNode() == "done" })
	}
	if err := w.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if dropped.Load() == 0 {
		t.Fatal("no reply was lost: the test tested nothing")
	}
	if st := w.Stats(); st.Reported != 30 || st.Aborted != 0 {
		t.Fatalf("stats %+v, want 30 steps reported and none refused", st)
	}
}

// warnings is a slog handler that passes every warning on a channel.
type warnings chan slog.Record

func (warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w warnings) Handle(_ context.Context, r slog.Record) error {
	select {
	case w <- r:
	default:
	}
	return nil
}
func (w warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w warnings) WithGroup(string) slog.Handler      { return w }

// TestWorkerWarnsOfAnUnknownMachine: a handler registered for a machine
// the server does not have is warned about as such when the worker
// starts; the worker keeps polling and handles the machine's work once it
// is defined.
func TestWorkerWarnsOfAnUnknownMachine(t *testing.T) {
	addr := freeAddr(t)
	mustServer(t, addr, filepath.Join(t.TempDir(), "dfsmr.db"))
	c := mustClient(t, addr)
	warned := make(warnings, 16)
	w := client.NewWorker(c, client.WorkerOptions{Name: "w", Poll: 100 * time.Millisecond, Logger: slog.New(warned)})
	t.Cleanup(func() { w.Stop(context.Background()) })
	handled := make(chan string, 1)
	w.Handle("job", "work", func(_ context.Context, in *pb.Instance) (client.Result, error) {
		handled <- in.GetId()
		return client.Result{Transition: "ok"}, nil
	})
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := <-warned
	if !strings.Contains(r.Message, "machine or node the server does not have") {
		t.Fatalf("first warning %q", r.Message)
	}
	if _, err := c.Machines.DefineMachine(t.Context(), &pb.DefineMachineRequest{Source: jobYAML}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Instances.StartInstance(t.Context(), &pb.StartInstanceRequest{Id: "j-1", Machine: "job"}); err != nil {
		t.Fatal(err)
	}
	if id := <-handled; id != "j-1" {
		t.Fatalf("handled %q", id)
	}
}

// TestWorkerCallBackoffJitters: the worker's call retries grow from
// WorkerMinBackoff to WorkerMaxBackoff and are spread by the jitter draw,
// so that a fleet of workers that lost the server together does not come
// back in step.
func TestWorkerCallBackoffJitters(t *testing.T) {
	p := client.CallBackoff
	if lo, hi := p.Delay(3, 0), p.Delay(3, 0.99); lo >= hi || lo < client.WorkerMinBackoff {
		t.Fatalf("third retry waits %v..%v: no spread", lo, hi)
	}
	if d := p.Delay(100, 0.99); d != client.WorkerMaxBackoff {
		t.Fatalf("late retry waits %v, want the cap %v", d, client.WorkerMaxBackoff)
	}
}
