package server_test

import (
	"context"
	"testing"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestTransitionRetryAfterNextLease is the reproduction of a retried
// Transition refused once the instance was leased again: start, Ready
// (token 1), Transition with request id req-a, Ready again (token 2), and
// the first Transition once more. The retry is answered with the instance
// as it is now, and changes nothing.
func TestTransitionRetryAfterNextLease(t *testing.T) {
	env := mustServer(t, server.Config{})
	ctx := context.Background()
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "r-1", Machine: "report"}); err != nil {
		t.Fatal(err)
	}
	first, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "report"})
	if err != nil || first.GetLease().GetToken() != 1 {
		t.Fatalf("ready: %v %v", first, err)
	}
	req := &pb.TransitionRequest{Id: "r-1", Token: 1, Transition: "ok", RequestId: "req-a"}
	if _, err := env.work.Transition(ctx, req); err != nil {
		t.Fatal(err)
	}
	second, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "report"})
	if err != nil || second.GetLease().GetToken() != 2 {
		t.Fatalf("ready again: %v %v", second, err)
	}
	again, err := env.work.Transition(ctx, req)
	if err != nil {
		t.Fatalf("retry after the next lease: %v", err)
	}
	if in := again.GetInstance(); in.GetNode() != "uploadable" || in.GetLease().GetToken() != 2 || in.GetRev() != second.GetInstance().GetRev() {
		t.Fatalf("retry answered %v, want the instance as it is (leased with token 2)", in)
	}
}

// TestTransitionBatchRetryReturnsTheContinuedLease: a TransitionBatch item
// with continuation whose reply was lost, sent again, is answered with the
// instance and with the continued lease the first call granted, so that
// the worker learns the token it holds; nothing is leased a second time.
func TestTransitionBatchRetryReturnsTheContinuedLease(t *testing.T) {
	env := mustServer(t, server.Config{})
	ctx := context.Background()
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "r-1", Machine: "report"}); err != nil {
		t.Fatal(err)
	}
	lease, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "report"})
	if err != nil {
		t.Fatal(err)
	}
	req := &pb.TransitionBatchRequest{
		Worker: "w", ContinueNodes: []string{"report/uploadable"},
		Transitions: []*pb.TransitionRequest{{Id: "r-1", Token: lease.GetLease().GetToken(), Transition: "ok", RequestId: "req-b"}},
	}
	first, err := env.work.TransitionBatch(ctx, req)
	if err != nil || first.GetResults()[0].GetNext().GetLease().GetToken() != 2 {
		t.Fatalf("first call: %v %v", first, err)
	}
	for range 2 {
		again, err := env.work.TransitionBatch(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		r := again.GetResults()[0]
		if r.GetCode() != 0 || !proto.Equal(r.GetNext(), first.GetResults()[0].GetNext()) {
			t.Fatalf("retry answered %v, want the first call's next %v", r, first.GetResults()[0].GetNext())
		}
	}
	// Once that lease is done with, a retry says so by carrying no next.
	if _, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: "r-1", Token: 2, Transition: "ok"}); err != nil {
		t.Fatal(err)
	}
	last, err := env.work.TransitionBatch(ctx, req)
	if err != nil || last.GetResults()[0].GetCode() != 0 || last.GetResults()[0].GetNext() != nil ||
		last.GetResults()[0].GetInstance().GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_FINAL {
		t.Fatalf("retry after the continued lease ended: %v %v", last, err)
	}
}

// TestErrorsSayItOnce: each not-found message states its fact once and
// names what the request gave, no more.
func TestErrorsSayItOnce(t *testing.T) {
	env := mustServer(t, server.Config{})
	ctx := context.Background()
	machines := pb.NewMachineServiceClient(env.conn)
	batch := func(id string) error {
		resp, err := env.work.TransitionBatch(ctx, &pb.TransitionBatchRequest{Transitions: []*pb.TransitionRequest{{Id: id, Token: 1, Transition: "ok"}}})
		if err != nil {
			return err
		}
		r := resp.GetResults()[0]
		return status.Error(codes.Code(r.GetCode()), r.GetMessage())
	}
	for _, tt := range []struct {
		name string
		call func() error
		want string
	}{
		{"start unknown machine", func() error {
			_, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "x", Machine: "nosuch"})
			return err
		}, `machine "nosuch": not found`},
		{"start unknown version", func() error {
			_, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "x", Machine: "report", Version: 9})
			return err
		}, `machine "report" version 9: not found`},
		{"get machine", func() error {
			_, err := machines.GetMachine(ctx, &pb.GetMachineRequest{Id: "nosuch"})
			return err
		}, `machine "nosuch": not found`},
		{"get instance", func() error {
			_, err := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "x"})
			return err
		}, `instance "x": not found`},
		{"signal", func() error {
			_, err := env.instances.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: "x", Signal: "s"})
			return err
		}, `instance "x": not found`},
		{"transition", func() error {
			_, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: "x", Token: 1, Transition: "ok"})
			return err
		}, `instance "x": not found`},
		{"batch item", func() error { return batch("x") }, `instance "x": not found`},
		{"heartbeat", func() error {
			_, err := env.work.Heartbeat(ctx, &pb.HeartbeatRequest{Id: "x", Token: 1})
			return err
		}, `instance "x": not found`},
		{"ready unknown machine", func() error {
			_, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "nosuch"})
			return err
		}, `machine "nosuch": not found`},
		{"ready unknown node", func() error {
			_, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "report", Node: "typo"})
			return err
		}, `machine "report" has no node "typo": not found`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := wantCode(t, tt.call(), codes.NotFound)
			if st.Message() != tt.want {
				t.Fatalf("message %q, want %q", st.Message(), tt.want)
			}
		})
	}
}

// TestTransitionBatchRetryReturnsTheRefill: the retry of an item whose
// first call refilled its slot with another instance is answered with
// that refill lease, while it is live.
func TestTransitionBatchRetryReturnsTheRefill(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, chainYAML)
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "chain"}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "chain"})
	if err != nil || a.GetInstance().GetId() != "a" {
		t.Fatalf("ready: %v %v", a, err)
	}
	// a is delayed an hour (not continued): its slot is refilled with b.
	req := &pb.TransitionBatchRequest{
		Worker: "w", ContinueNodes: []string{"chain/first"}, Refill: true,
		Transitions: []*pb.TransitionRequest{{Id: "a", Token: a.GetLease().GetToken(), Transition: "later", RequestId: "req-r"}},
	}
	first, err := env.work.TransitionBatch(ctx, req)
	if err != nil || first.GetResults()[0].GetNext().GetId() != "b" {
		t.Fatalf("first call: %v %v", first, err)
	}
	again, err := env.work.TransitionBatch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if r := again.GetResults()[0]; r.GetCode() != 0 || !proto.Equal(r.GetNext(), first.GetResults()[0].GetNext()) ||
		r.GetInstance().GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_WAITING {
		t.Fatalf("retry answered %v, want a WAITING and the refill %v", r, first.GetResults()[0].GetNext())
	}
	// b's lease given back: the retry no longer names it.
	if _, err := env.work.Relinquish(ctx, &pb.RelinquishRequest{Id: "b", Token: first.GetResults()[0].GetNext().GetLease().GetToken()}); err != nil {
		t.Fatal(err)
	}
	last, err := env.work.TransitionBatch(ctx, req)
	if err != nil || last.GetResults()[0].GetCode() != 0 || last.GetResults()[0].GetNext() != nil {
		t.Fatalf("retry after the refill ended: %v %v", last, err)
	}
}

// TestTransitionBatchRetryOfFinalItemReturnsTheRefill: the same for an
// item whose instance went FINAL: the refill is recorded with the final
// state in the one write a FINAL instance gets.
func TestTransitionBatchRetryOfFinalItemReturnsTheRefill(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, chainYAML)
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "chain"}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "chain"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: "a", Token: a.GetLease().GetToken(), Transition: "ok"}); err != nil {
		t.Fatal(err)
	}
	a, err = env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "chain", Node: "second"})
	if err != nil || a.GetInstance().GetId() != "a" {
		t.Fatalf("ready second: %v %v", a, err)
	}
	req := &pb.TransitionBatchRequest{
		Worker: "w", ContinueNodes: []string{"chain/first"}, Refill: true,
		Transitions: []*pb.TransitionRequest{{Id: "a", Token: a.GetLease().GetToken(), Transition: "ok", RequestId: "req-f"}},
	}
	first, err := env.work.TransitionBatch(ctx, req)
	if err != nil || first.GetResults()[0].GetInstance().GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_FINAL ||
		first.GetResults()[0].GetNext().GetId() != "b" {
		t.Fatalf("first call: %v %v", first, err)
	}
	again, err := env.work.TransitionBatch(ctx, req)
	if err != nil || again.GetResults()[0].GetCode() != 0 || !proto.Equal(again.GetResults()[0].GetNext(), first.GetResults()[0].GetNext()) {
		t.Fatalf("retry answered %v %v, want the refill %v", again, err, first.GetResults()[0].GetNext())
	}
}
