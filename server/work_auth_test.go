package server_test

import (
	"context"
	"errors"
	"io"
	"testing"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/tlsconf/tlstest"
	"google.golang.org/grpc/codes"
)

// history returns every change of instance id committed so far.
func history(t *testing.T, cl pb.ChangesServiceClient, id string) []*pb.Change {
	t.Helper()
	stream, err := cl.Changes(context.Background(), &pb.ChangesRequest{Instance: id, FromSeq: 1, StopAtHead: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []*pb.Change
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.GetChange())
	}
}

// TestLeaseBoundToItsPrincipal: a lease is used only by the principal that
// took it. Another worker, or an admin, holding the right token gets
// PERMISSION_DENIED and changes nothing.
func TestLeaseBoundToItsPrincipal(t *testing.T) {
	s := mustSecure(t, false, nil)
	ctx := context.Background()
	ops := pb.NewInstanceServiceClient(s.dial(t, s.token["ops"], tlstest.Pair{}))
	if _, err := ops.StartInstance(ctx, &pb.StartInstanceRequest{Id: "r-1", Machine: "report"}); err != nil {
		t.Fatal(err)
	}
	pool := pb.NewWorkServiceClient(s.dial(t, s.token["pool"], tlstest.Pair{}))
	lease, err := pool.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "report"})
	if err != nil || lease.GetLease() == nil {
		t.Fatalf("ready: %v %v", lease, err)
	}
	tok := lease.GetLease().GetToken()
	for _, name := range []string{"pool-b", "root"} {
		other := pb.NewWorkServiceClient(s.dial(t, s.token[name], tlstest.Pair{}))
		_, err := other.Transition(ctx, &pb.TransitionRequest{Id: "r-1", Token: tok, Transition: "ok", RequestId: "q"})
		wantCode(t, err, codes.PermissionDenied)
		_, err = other.Heartbeat(ctx, &pb.HeartbeatRequest{Id: "r-1", Token: tok})
		wantCode(t, err, codes.PermissionDenied)
		_, err = other.Relinquish(ctx, &pb.RelinquishRequest{Id: "r-1", Token: tok})
		wantCode(t, err, codes.PermissionDenied)
		batch, err := other.TransitionBatch(ctx, &pb.TransitionBatchRequest{Transitions: []*pb.TransitionRequest{
			{Id: "r-1", Token: tok, Transition: "ok"},
		}})
		if err != nil || codes.Code(batch.GetResults()[0].GetCode()) != codes.PermissionDenied {
			t.Fatalf("%s batch: %v %v; want its item PERMISSION_DENIED", name, batch, err)
		}
	}
	got, err := pool.Transition(ctx, &pb.TransitionRequest{Id: "r-1", Token: tok, Transition: "ok", RequestId: "q"})
	if err != nil || got.GetInstance().GetNode() == "downloadable" {
		t.Fatalf("the holder's transition: %v %v", got, err)
	}
	// Its retry is the holder's too.
	other := pb.NewWorkServiceClient(s.dial(t, s.token["pool-b"], tlstest.Pair{}))
	_, err = other.Transition(ctx, &pb.TransitionRequest{Id: "r-1", Token: tok, Transition: "ok", RequestId: "q"})
	wantCode(t, err, codes.PermissionDenied)
}

// TestWorkChangesActorIsThePrincipal: with authentication, the changes of
// work calls are recorded under the authenticated principal, whatever
// worker name the request gives (here an admin's name); the name is kept
// beside it in Change.worker.
func TestWorkChangesActorIsThePrincipal(t *testing.T) {
	s := mustSecure(t, false, nil)
	ctx := context.Background()
	ops := pb.NewInstanceServiceClient(s.dial(t, s.token["ops"], tlstest.Pair{}))
	if _, err := ops.StartInstance(ctx, &pb.StartInstanceRequest{Id: "r-1", Machine: "report"}); err != nil {
		t.Fatal(err)
	}
	pool := pb.NewWorkServiceClient(s.dial(t, s.token["pool"], tlstest.Pair{}))
	lease, err := pool.Ready(ctx, &pb.ReadyRequest{Worker: "root", Machine: "report"})
	if err != nil || lease.GetLease() == nil {
		t.Fatalf("ready: %v %v", lease, err)
	}
	tok := lease.GetLease().GetToken()
	if _, err := pool.Heartbeat(ctx, &pb.HeartbeatRequest{Id: "r-1", Token: tok}); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Transition(ctx, &pb.TransitionRequest{Id: "r-1", Token: tok, Transition: "ok"}); err != nil {
		t.Fatal(err)
	}
	reader := pb.NewChangesServiceClient(s.dial(t, s.token["viewer"], tlstest.Pair{}))
	seen := 0
	for _, c := range history(t, reader, "r-1") {
		switch c.GetKind() {
		case pb.ChangeKind_CHANGE_KIND_LEASED, pb.ChangeKind_CHANGE_KIND_HEARTBEAT, pb.ChangeKind_CHANGE_KIND_TRANSITIONED:
			seen++
			if c.GetActor() != "pool" || c.GetWorker() != "root" {
				t.Errorf("%s: actor %q worker %q, want pool and root", c.GetKind(), c.GetActor(), c.GetWorker())
			}
		case pb.ChangeKind_CHANGE_KIND_STARTED:
			if c.GetActor() != "ops" || c.GetWorker() != "" {
				t.Errorf("STARTED: actor %q worker %q", c.GetActor(), c.GetWorker())
			}
		}
	}
	if seen != 3 {
		t.Fatalf("saw %d work changes, want 3", seen)
	}
}

// TestWorkChangesActorWithoutAuth: without authentication the actor of a
// work call's changes is the worker name the request gave, as documented.
func TestWorkChangesActorWithoutAuth(t *testing.T) {
	env := mustServer(t, server.Config{})
	ctx := context.Background()
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "r-1", Machine: "report"}); err != nil {
		t.Fatal(err)
	}
	lease, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w-7", Machine: "report"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: "r-1", Token: lease.GetLease().GetToken(), Transition: "ok"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range history(t, env.changes, "r-1")[1:] {
		if c.GetActor() != "w-7" || c.GetWorker() != "w-7" {
			t.Errorf("%s: actor %q worker %q, want w-7 for both", c.GetKind(), c.GetActor(), c.GetWorker())
		}
	}
}
