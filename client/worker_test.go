package client_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc"
)

// jobYAML has one work node with a short lease (so that only heartbeats
// keep a long handler's lease) and a signal that takes the work away.
const jobYAML = `id: job
nodes:
  work:
    start: true
    timeout: 400ms
    retry: {max_attempts: 5, backoff: fixed, initial: 10ms, jitter: 0}
    transitions:
      ok: done
      error: work
      hold: {to: held, signal: true}
  held:
    transitions: {release: {to: work, signal: true}}
  done: {final: true}
`

// jobServer starts a server on a fresh file with the job machine defined
// by yaml and the instance j-1 started, and returns a client and the
// server, its address and its file.
func jobServer(t *testing.T, yaml string) (*client.Client, *server.Server, string, string) {
	t.Helper()
	addr, db := freeAddr(t), filepath.Join(t.TempDir(), "dfsmr.db")
	srv := mustServer(t, addr, db)
	c := mustClient(t, addr)
	if _, err := c.Machines.DefineMachine(t.Context(), &pb.DefineMachineRequest{Source: yaml}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Instances.StartInstance(t.Context(), &pb.StartInstanceRequest{Id: "j-1", Machine: "job"}); err != nil {
		t.Fatal(err)
	}
	return c, srv, addr, db
}

func newWorker(t *testing.T, c *client.Client, opts client.WorkerOptions) *client.Worker {
	t.Helper()
	opts.Name = "test-worker"
	opts.Logger = testLogger(t)
	if opts.Poll == 0 {
		opts.Poll = 200 * time.Millisecond
	}
	w := client.NewWorker(c, opts)
	t.Cleanup(func() { w.Stop(context.Background()) })
	return w
}

func getInstance(t *testing.T, c *client.Client, id string) *pb.Instance {
	t.Helper()
	// Wait for the connection: a test may have restarted the server.
	r, err := c.Instances.GetInstance(t.Context(), &pb.GetInstanceRequest{Id: id, IncludeHistory: true}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	return r.GetInstance()
}

func waitInstance(t *testing.T, c *client.Client, id string, cond func(*pb.Instance) bool) *pb.Instance {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		in := getInstance(t, c, id)
		if cond(in) {
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance never reached the condition: %v", in)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func kinds(in *pb.Instance) map[pb.ChangeKind]int {
	m := map[pb.ChangeKind]int{}
	for _, ch := range in.GetHistory() {
		m[ch.GetKind()]++
	}
	return m
}

// TestWorkerHeartbeatsLongHandler: a handler that runs for several lease
// lengths keeps its lease, and its transition is accepted.
func TestWorkerHeartbeatsLongHandler(t *testing.T) {
	c, _, _, _ := jobServer(t, jobYAML)
	w := newWorker(t, c, client.WorkerOptions{})
	w.Handle("job", "work", func(ctx context.Context, in *pb.Instance) (client.Result, error) {
		select {
		case <-time.After(1500 * time.Millisecond): // almost 4 leases of 400ms
		case <-ctx.Done():
			return client.Result{}, ctx.Err()
		}
		return client.Result{Transition: "ok"}, nil
	})
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	in := waitInstance(t, c, "j-1", func(in *pb.Instance) bool { return in.GetNode() == "done" })
	if k := kinds(in); k[pb.ChangeKind_CHANGE_KIND_TIMED_OUT] != 0 || k[pb.ChangeKind_CHANGE_KIND_HEARTBEAT] < 2 {
		t.Fatalf("history kinds %v: want heartbeats and no timeout", k)
	}
	if err := w.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Leased != 1 || st.Reported != 1 || st.Aborted != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestWorkerLeaseLost: a signal takes the work away while the handler
// runs; the worker counts it as aborted and the instance stays where the
// signal put it.
func TestWorkerLeaseLost(t *testing.T) {
	c, _, _, _ := jobServer(t, jobYAML)
	running, release := make(chan struct{}), make(chan struct{})
	w := newWorker(t, c, client.WorkerOptions{})
	w.Handle("job", "work", func(ctx context.Context, in *pb.Instance) (client.Result, error) {
		close(running)
		<-release
		return client.Result{Transition: "ok"}, nil
	})
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-running
	if _, err := c.Instances.SignalInstance(t.Context(), &pb.SignalInstanceRequest{Id: "j-1", Signal: "hold"}); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := w.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Aborted != 1 || st.Reported != 0 {
		t.Fatalf("stats %+v, want one aborted", st)
	}
	if in := getInstance(t, c, "j-1"); in.GetNode() != "held" {
		t.Fatalf("instance in %q, want held", in.GetNode())
	}
}

// TestWorkerStopDrains: Stop lets a handler that finishes in time report,
// and relinquishes the lease of one that does not.
func TestWorkerStopDrains(t *testing.T) {
	const slowYAML = `id: job
nodes:
  work:
    start: true
    timeout: 1m
    transitions: {ok: done, error: work}
  done: {final: true}
`
	c, _, _, _ := jobServer(t, slowYAML)
	if _, err := c.Instances.StartInstance(t.Context(), &pb.StartInstanceRequest{Id: "j-2", Machine: "job"}); err != nil {
		t.Fatal(err)
	}
	started := make(chan string, 2)
	w := newWorker(t, c, client.WorkerOptions{})
	w.Handle("job", "work", func(ctx context.Context, in *pb.Instance) (client.Result, error) {
		started <- in.GetId()
		if in.GetId() == "j-1" {
			time.Sleep(100 * time.Millisecond) // finishes within the drain
			return client.Result{Transition: "ok"}, nil
		}
		<-ctx.Done() // never finishes on its own
		return client.Result{}, ctx.Err()
	})
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-started
	<-started
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if err := w.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want the drain deadline", err)
	}
	if st := w.Stats(); st.Reported != 1 || st.Relinquished != 1 || st.Failed != 0 {
		t.Fatalf("stats %+v, want one reported and one relinquished", st)
	}
	if in := getInstance(t, c, "j-1"); in.GetNode() != "done" {
		t.Fatalf("j-1 in %q, want done", in.GetNode())
	}
	in := getInstance(t, c, "j-2")
	if in.GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_READY || in.GetAttempt() != 1 {
		t.Fatalf("j-2 = %v, want READY again at attempt 1", in)
	}
}

// TestWorkerStopGivesUpReportsAtItsDeadline: the server goes away while a
// handler runs; the report retries (the lease has a minute to run), until
// a Stop whose ctx ends gives it up: Stop returns at its deadline rather
// than when the lease expires.
func TestWorkerStopGivesUpReportsAtItsDeadline(t *testing.T) {
	const slowYAML = `id: job
nodes:
  work:
    start: true
    timeout: 1m
    transitions: {ok: done, error: work}
  done: {final: true}
`
	c, srv, _, _ := jobServer(t, slowYAML)
	reporting := make(chan struct{})
	w := newWorker(t, c, client.WorkerOptions{})
	w.Handle("job", "work", func(ctx context.Context, in *pb.Instance) (client.Result, error) {
		if err := srv.Stop(context.Background()); err != nil {
			t.Error(err)
		}
		close(reporting)
		return client.Result{Transition: "ok"}, nil
	})
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-reporting
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	if err := w.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want its deadline", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("Stop took %v with a 300ms deadline: it waited for the report", took)
	}
}

// TestWorkerRetriesUnavailable: the server restarts while a handler runs;
// the worker retries its Transition until the server is back, and the
// request id makes that safe.
func TestWorkerRetriesUnavailable(t *testing.T) {
	const slowYAML = `id: job
nodes:
  work:
    start: true
    timeout: 1m
    transitions: {ok: done, error: work}
  done: {final: true}
`
	c, srv, addr, db := jobServer(t, slowYAML)
	running, release := make(chan struct{}), make(chan struct{})
	w := newWorker(t, c, client.WorkerOptions{})
	w.Handle("job", "work", func(ctx context.Context, in *pb.Instance) (client.Result, error) {
		close(running)
		<-release
		return client.Result{Transition: "ok"}, nil
	})
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-running
	if err := srv.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	close(release) // the Transition now fails with UNAVAILABLE, and is retried
	time.Sleep(300 * time.Millisecond)
	mustServer(t, addr, db)
	waitInstance(t, c, "j-1", func(in *pb.Instance) bool { return in.GetNode() == "done" })
	if err := w.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Reported != 1 || st.Aborted != 0 {
		t.Fatalf("stats %+v, want the one transition reported", st)
	}
}

// TestWorkerContinue: with continuation, a three-step item needs one Ready
// for its first step only, and every step is reported.
func TestWorkerContinue(t *testing.T) {
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
	c, _, _, _ := jobServer(t, chainYAML)
	for i := range 9 {
		if _, err := c.Instances.StartInstance(t.Context(), &pb.StartInstanceRequest{Id: fmt.Sprint("k-", i), Machine: "job"}); err != nil {
			t.Fatal(err)
		}
	}
	var readies atomic.Int64
	c = mustClient(t, c.Conn().Target(), grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if r, ok := reply.(*pb.ReadyResponse); ok && err == nil {
			readies.Add(int64(len(r.GetInstances())))
		}
		return err
	}))
	w := newWorker(t, c, client.WorkerOptions{Concurrency: 4, Continue: true})
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
	if st := w.Stats(); st.Reported != 30 || st.Leased != 30 {
		t.Fatalf("stats %+v, want 30 steps leased and reported", st)
	}
	if n := readies.Load(); n != 10 {
		t.Fatalf("%d instances leased by Ready, want 10 (one per item)", n)
	}
}
