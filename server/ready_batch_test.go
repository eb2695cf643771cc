package server_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestReadyBatch(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, orderYAML)
	ctx := context.Background()
	for i := range 10 {
		// Descending priorities: the offer order is the start order.
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprint("o-", i), Machine: "order", Priority: int32(100 - i)}); err != nil {
			t.Fatal(err)
		}
	}
	ready := func(n uint32) *pb.ReadyResponse {
		t.Helper()
		r, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "order", MaxCount: n})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ids := func(r *pb.ReadyResponse) []string {
		var out []string
		for _, in := range r.GetInstances() {
			out = append(out, in.GetId())
		}
		return out
	}

	commits := env.srv.StoreStats().Commits
	r := ready(4)
	if got, want := ids(r), []string{"o-0", "o-1", "o-2", "o-3"}; !slices.Equal(got, want) {
		t.Fatalf("batch of 4 = %v, want %v", got, want)
	}
	if n := env.srv.StoreStats().Commits - commits; n != 1 {
		t.Errorf("a batch of 4 leases took %d commits, want 1", n)
	}
	if r.GetInstance().GetId() != "o-0" || r.GetLease().GetToken() != r.GetInstances()[0].GetLease().GetToken() {
		t.Errorf("single fields %v / %v are not the first of the batch", r.GetInstance().GetId(), r.GetLease())
	}
	for _, in := range r.GetInstances() {
		if in.GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_LEASED || in.GetLease().GetToken() == 0 || in.GetLease().GetWorker() != "w" {
			t.Fatalf("batched instance not leased: %v", in)
		}
	}
	// Every lease of the batch is live on its own.
	for _, in := range r.GetInstances() {
		if _, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: in.GetId(), Token: in.GetLease().GetToken(), Transition: "ok"}); err != nil {
			t.Fatalf("Transition %s: %v", in.GetId(), err)
		}
	}
	if got := ids(ready(0)); !slices.Equal(got, []string{"o-4"}) {
		t.Fatalf("max_count 0 leased %v, want one", got)
	}
	if got := ids(ready(256)); !slices.Equal(got, []string{"o-5", "o-6", "o-7", "o-8", "o-9"}) {
		t.Fatalf("max_count 256 leased %v, want the 5 left", got)
	}
	if r := ready(8); len(r.GetInstances()) != 0 || r.GetLease() != nil || r.GetInstance() != nil {
		t.Fatalf("empty queue gave %v", r)
	}

	_, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", MaxCount: 257})
	st := wantCode(t, err, codes.InvalidArgument)
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if !slices.Equal(fields, []string{"max_count"}) {
		t.Fatalf("violations on %v, want max_count", fields)
	}
}

// TestReadyBatchWaitersOneWakeEach: batched long polls keep the waiters'
// promise: an instance that becomes READY wakes one waiter, never all, and
// a batch returns with what there is instead of waiting to fill up.
func TestReadyBatchWaitersOneWakeEach(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, orderYAML)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const waiters = 8
	got := make(chan []string, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Go(func() {
			r, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: fmt.Sprint("w", i), Machine: "order", MaxCount: 16, Wait: durationpb.New(time.Minute)})
			var ids []string
			if err == nil {
				for _, in := range r.GetInstances() {
					ids = append(ids, in.GetId())
				}
			}
			got <- ids
		})
	}
	eng := env.srv.Engine()
	waitFor(t, func() bool { return eng.Waiting() == waiters })
	base := eng.ReadyWakeups()
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "o-1", Machine: "order"}); err != nil {
		t.Fatal(err)
	}
	first := <-got
	if !slices.Equal(first, []string{"o-1"}) {
		t.Fatalf("woken waiter got %v, want [o-1]", first)
	}
	waitFor(t, func() bool { return eng.Waiting() == waiters-1 })
	if n := eng.ReadyWakeups() - base; n != 1 {
		t.Errorf("%d wake-ups for one instance, want 1", n)
	}
	cancel()
	wg.Wait()
	close(got)
	for ids := range got {
		if len(ids) != 0 {
			t.Errorf("a waiter that was never woken leased %v", ids)
		}
	}
}

// chainYAML has two work nodes in a row, for continuation.
const chainYAML = `id: chain
nodes:
  first:
    start: true
    timeout: 1m
    transitions: {ok: second, later: {to: second, delay: 1h}}
  second:
    timeout: 1m
    transitions: {ok: done}
  done: {final: true}
`

func TestTransitionBatch(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, chainYAML)
	ctx := context.Background()
	for i := range 4 {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprint("c-", i), Machine: "chain", Priority: int32(10 - i)}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "chain", MaxCount: 4})
	if err != nil || len(r.GetInstances()) != 4 {
		t.Fatalf("Ready: %v %v", r, err)
	}
	tok := func(i int) uint64 { return r.GetInstances()[i].GetLease().GetToken() }
	// A waiter for the second node is not woken by continued items: they
	// are leased again in the commit that made them READY.
	wctx, cancelWaiter := context.WithCancel(ctx)
	defer cancelWaiter()
	go env.work.Ready(wctx, &pb.ReadyRequest{Worker: "idle", Machine: "chain", Node: "second", Wait: durationpb.New(time.Minute)})
	waitFor(t, func() bool { return env.srv.Engine().Waiting() == 1 })
	wakes := env.srv.Engine().ReadyWakeups()
	commits := env.srv.StoreStats().Commits
	resp, err := env.work.TransitionBatch(ctx, &pb.TransitionBatchRequest{
		Worker: "w", ContinueNodes: []string{"chain/second"},
		Transitions: []*pb.TransitionRequest{
			{Id: "c-0", Token: tok(0), Transition: "ok"},                  // continued
			{Id: "c-1", Token: tok(1) + 100, Transition: "ok"},            // stale token
			{Id: "c-2", Token: tok(2), Transition: "nope"},                // illegal
			{Id: "c-3", Token: tok(3), Transition: "later"},               // WAITING: not continued
			{Id: "c-0", Token: tok(0), Transition: "ok"},                  // the first item made it stale
			{Id: "missing", Token: 1, Transition: "ok"},                   // not found
			{Id: "c-1", Token: tok(1), Transition: ""},                    // invalid
			{Id: "c-1", Token: tok(1), Transition: "ok", RequestId: "r1"}, // fine after all that
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := env.srv.StoreStats().Commits - commits; n != 1 {
		t.Errorf("a batch took %d commits, want 1", n)
	}
	if n := env.srv.Engine().ReadyWakeups() - wakes; n != 0 {
		t.Errorf("continued items woke %d waiters", n)
	}
	cancelWaiter()
	want := []codes.Code{codes.OK, codes.Aborted, codes.FailedPrecondition, codes.OK, codes.Aborted, codes.NotFound, codes.InvalidArgument, codes.OK}
	for i, res := range resp.GetResults() {
		if got := codes.Code(res.GetCode()); got != want[i] {
			t.Errorf("item %d: %v %q, want %v", i, got, res.GetMessage(), want[i])
		}
		if (res.GetCode() == 0) != (res.GetInstance() != nil) {
			t.Errorf("item %d: code %d with instance %v", i, res.GetCode(), res.GetInstance())
		}
	}
	if len(resp.GetResults()) != len(want) {
		t.Fatalf("%d results for %d items", len(resp.GetResults()), len(want))
	}
	next := resp.GetResults()[0].GetNext()
	if next.GetNode() != "second" || next.GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_LEASED || next.GetLease().GetWorker() != "w" || next.GetLease().GetToken() <= tok(0) {
		t.Fatalf("continued lease: %v", next)
	}
	// Continuation applies to every item left READY in a continue node.
	if got := resp.GetResults()[7].GetNext(); got.GetNode() != "second" {
		t.Errorf("c-1 not continued: %v", got)
	}
	if resp.GetResults()[3].GetNext() != nil || resp.GetResults()[3].GetInstance().GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_WAITING {
		t.Errorf("a delayed transition was continued: %v", resp.GetResults()[3])
	}
	// The continued lease is live: finish c-0 with it.
	if _, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: "c-0", Token: next.GetLease().GetToken(), Transition: "ok"}); err != nil {
		t.Fatal(err)
	}
	// Nothing is READY: every instance moved on or is leased.
	if r, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "chain"}); err != nil || r.GetLease() != nil {
		t.Fatalf("Ready after the batch: %v %v", r, err)
	}

	_, err = env.work.TransitionBatch(ctx, &pb.TransitionBatchRequest{})
	wantCode(t, err, codes.InvalidArgument)
	_, err = env.work.TransitionBatch(ctx, &pb.TransitionBatchRequest{
		ContinueNodes: []string{"chain/second"}, Transitions: []*pb.TransitionRequest{{Id: "c-2", Token: tok(2), Transition: "ok"}},
	})
	wantCode(t, err, codes.InvalidArgument) // continuation needs a worker
	many := make([]*pb.TransitionRequest, 257)
	for i := range many {
		many[i] = &pb.TransitionRequest{Id: "c-2", Token: tok(2), Transition: "ok"}
	}
	_, err = env.work.TransitionBatch(ctx, &pb.TransitionBatchRequest{Transitions: many})
	wantCode(t, err, codes.InvalidArgument)
	// None of the refused calls applied anything: c-2 is still leased.
	if got, _ := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "c-2"}); got.GetInstance().GetNode() != "first" || got.GetInstance().GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_LEASED {
		t.Fatalf("c-2 = %v", got.GetInstance())
	}
}

// TestTransitionBatchRefill: an item that is not continued gets, in the
// same commit, the READY instance Ready would offer first among the
// continue nodes; a refused item gets nothing.
func TestTransitionBatchRefill(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, chainYAML)
	ctx := context.Background()
	for _, s := range []struct {
		id   string
		prio int32
	}{{"a", 9}, {"d", 7}, {"b", 5}, {"c", 1}} {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: s.id, Machine: "chain", Priority: s.prio}); err != nil {
			t.Fatal(err)
		}
	}
	// a and d move to second and are READY there; a is leased again.
	r, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "chain", MaxCount: 2})
	if err != nil || len(r.GetInstances()) != 2 || r.GetInstances()[0].GetId() != "a" || r.GetInstances()[1].GetId() != "d" {
		t.Fatalf("Ready: %v %v", r, err)
	}
	for _, in := range r.GetInstances() {
		if _, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: in.GetId(), Token: in.GetLease().GetToken(), Transition: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "chain", Node: "second"})
	if err != nil || a.GetInstance().GetId() != "a" {
		t.Fatalf("Ready second: %v %v", a, err)
	}
	batch := func(items ...*pb.TransitionRequest) *pb.TransitionBatchResponse {
		t.Helper()
		resp, err := env.work.TransitionBatch(ctx, &pb.TransitionBatchRequest{
			Worker: "w", ContinueNodes: []string{"chain/first", "chain/second"}, Refill: true, Transitions: items,
		})
		if err != nil || len(resp.GetResults()) != len(items) {
			t.Fatalf("TransitionBatch: %v %v", resp, err)
		}
		return resp
	}
	// a finishes; of b (first, 5), c (first, 1) and d (second, 7), d comes
	// first. The stale item is refused and refilled with nothing.
	resp := batch(
		&pb.TransitionRequest{Id: "a", Token: a.GetLease().GetToken(), Transition: "ok"},
		&pb.TransitionRequest{Id: "b", Token: 12345, Transition: "ok"},
	)
	if res := resp.GetResults()[0]; res.GetInstance().GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_FINAL ||
		res.GetNext().GetId() != "d" || res.GetNext().GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_LEASED || res.GetNext().GetLease().GetWorker() != "w" {
		t.Fatalf("refill after a: %v", res)
	}
	if res := resp.GetResults()[1]; codes.Code(res.GetCode()) != codes.Aborted || res.GetNext() != nil {
		t.Fatalf("stale item: %v", res)
	}
	d := resp.GetResults()[0].GetNext()
	// d finishes: b (priority 5) before c (priority 1).
	resp = batch(&pb.TransitionRequest{Id: "d", Token: d.GetLease().GetToken(), Transition: "ok"})
	b := resp.GetResults()[0].GetNext()
	if b.GetId() != "b" || b.GetNode() != "first" {
		t.Fatalf("refill after d: %v", resp.GetResults()[0])
	}
	// b is continued into second (continuation wins over refill); c stays
	// READY for anyone.
	resp = batch(&pb.TransitionRequest{Id: "b", Token: b.GetLease().GetToken(), Transition: "ok"})
	if next := resp.GetResults()[0].GetNext(); next.GetId() != "b" || next.GetNode() != "second" {
		t.Fatalf("b not continued: %v", resp.GetResults()[0])
	}
	if got, _ := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "c"}); got.GetInstance().GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_READY {
		t.Fatalf("c = %v", got.GetInstance())
	}

	for _, req := range []*pb.TransitionBatchRequest{
		{Refill: true, Transitions: []*pb.TransitionRequest{{Id: "c", Token: 1, Transition: "ok"}}},
		{Worker: "w", ContinueNodes: []string{"chain"}, Transitions: []*pb.TransitionRequest{{Id: "c", Token: 1, Transition: "ok"}}},
	} {
		_, err := env.work.TransitionBatch(ctx, req)
		wantCode(t, err, codes.InvalidArgument)
	}
}
