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
