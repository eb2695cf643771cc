package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ackedTransition is a Transition the server acknowledged.
type ackedTransition struct {
	id    string
	token uint64
}

// TestGracefulStopLosesNoAcknowledgedWrite stops the server while 16
// clients start instances, lease them and report transitions, a follower
// tails the changelog and a worker long-polls for work that never comes.
// Stop ends the follower and the long poll with UNAVAILABLE instead of
// waiting them out (the stop timeout is an hour), every call refused during
// the stop is UNAVAILABLE, and after reopening the file every start and
// every transition the server acknowledged is there.
func TestGracefulStopLosesNoAcknowledgedWrite(t *testing.T) {
	env := mustServer(t, server.Config{StopTimeout: time.Hour})
	ctx := context.Background()

	follow, err := env.changes.Changes(ctx, &pb.ChangesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := follow.Header(); err != nil {
		t.Fatal(err)
	}
	followDone := make(chan error, 1)
	go func() {
		for {
			if _, err := follow.Recv(); err != nil {
				followDone <- err
				return
			}
		}
	}()
	pollDone := make(chan error, 1)
	go func() {
		_, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "idle", Machine: "crawler", Wait: durationpb.New(5 * time.Minute)})
		pollDone <- err
	}()

	var mu sync.Mutex
	var starts []string
	var transitions []ackedTransition
	var wg sync.WaitGroup
	refused := func(what string, err error) bool {
		if err == nil {
			return false
		}
		if c := status.Code(err); c != codes.Unavailable {
			t.Errorf("%s during stop: %v (want UNAVAILABLE)", what, err)
		}
		return true
	}
	started := make(chan struct{}, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				_, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "report"})
				if refused("start", err) {
					return
				}
				mu.Lock()
				starts = append(starts, id)
				mu.Unlock()
				r, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: fmt.Sprint("w", w), Machine: "report", Node: "downloadable"})
				if refused("ready", err) {
					return
				}
				if l := r.GetLease(); l != nil {
					id := r.GetInstance().GetId()
					_, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: id, Token: l.GetToken(), Transition: "ok"})
					if refused("transition", err) {
						return
					}
					mu.Lock()
					transitions = append(transitions, ackedTransition{id, l.GetToken()})
					mu.Unlock()
				}
				if i == 10 {
					started <- struct{}{}
				}
			}
		})
	}
	for range 16 {
		<-started
	}
	stopped := make(chan error, 1)
	go func() { stopped <- env.srv.Stop(ctx) }() // the client stays connected
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("graceful stop still waiting after a minute: a stream or long poll was not ended")
	}
	wg.Wait()
	for name, done := range map[string]chan error{"changes follower": followDone, "long poll": pollDone} {
		if err := <-done; status.Code(err) != codes.Unavailable {
			t.Errorf("%s ended with %v, want UNAVAILABLE", name, err)
		}
	}

	again := mustServer(t, server.Config{DB: env.db})
	for _, id := range starts {
		if _, err := again.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: id}); err != nil {
			t.Fatalf("acknowledged start %s lost across a graceful stop: %v", id, err)
		}
	}
	for _, tr := range transitions {
		r, err := again.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: tr.id, IncludeHistory: true})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, c := range r.GetInstance().GetHistory() {
			found = found || (c.GetKind() == pb.ChangeKind_CHANGE_KIND_TRANSITIONED && c.GetTransition() == "ok" && c.GetToken() == tr.token)
		}
		if !found {
			t.Fatalf("acknowledged transition of %s (token %d) lost across a graceful stop", tr.id, tr.token)
		}
	}
	if len(transitions) == 0 {
		t.Fatal("no transition acknowledged: the load did not run")
	}
	t.Logf("%d acknowledged starts and %d transitions, all present after restart", len(starts), len(transitions))
}
