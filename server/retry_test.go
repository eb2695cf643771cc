package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc/codes"
)

// flakyYAML fails an instance at its first error in either working node.
const flakyYAML = `id: flaky
nodes:
  fetch:
    start: true
    retry: {max_attempts: 1}
    transitions: {ok: build, error: fetch}
  build:
    retry: {max_attempts: 1}
    transitions: {ok: done, error: build}
  done: {final: true}
`

// step leases instance id (the only READY one of its machine) and reports
// transition.
func step(t *testing.T, env *testEnv, id, transition string) *pb.Instance {
	t.Helper()
	ctx := context.Background()
	r, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w1", Machine: "flaky"})
	if err != nil || r.GetInstance().GetId() != id {
		t.Fatalf("Ready: %v %v, want %s", r, err, id)
	}
	tr, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: id, Token: r.GetLease().GetToken(), Transition: transition})
	if err != nil {
		t.Fatal(err)
	}
	return tr.GetInstance()
}

// failIn starts instance id and fails it in node ("fetch" or "build").
func failIn(t *testing.T, env *testEnv, id, node string) {
	t.Helper()
	if _, err := env.instances.StartInstance(context.Background(), &pb.StartInstanceRequest{Id: id, Machine: "flaky"}); err != nil {
		t.Fatal(err)
	}
	if node == "build" {
		step(t, env, id, "ok")
	}
	if in := step(t, env, id, "error"); in.GetNode() != "dfsmr.failed" {
		t.Fatalf("%s after its error: %v", id, in)
	}
}

func lastChange(t *testing.T, env *testEnv, id string) *pb.Change {
	t.Helper()
	g, err := env.instances.GetInstance(context.Background(), &pb.GetInstanceRequest{Id: id, IncludeHistory: true})
	if err != nil {
		t.Fatal(err)
	}
	h := g.GetInstance().GetHistory()
	return h[len(h)-1]
}

func TestRetryInstanceRunsAgainFromItsNode(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, flakyYAML)
	ctx := context.Background()
	failIn(t, env, "f-1", "build")

	r, err := env.instances.RetryInstance(ctx, &pb.RetryInstanceRequest{Id: "f-1", Reason: "disk replaced"})
	if err != nil {
		t.Fatal(err)
	}
	in := r.GetInstance()
	if in.GetNode() != "build" || in.GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_READY || in.GetAttempt() != 1 {
		t.Fatalf("retried: %v", in)
	}
	c := lastChange(t, env, "f-1")
	if c.GetKind() != pb.ChangeKind_CHANGE_KIND_RETRIED || c.GetTransition() != "dfsmr.retry" || c.GetFromNode() != "dfsmr.failed" ||
		c.GetToNode() != "build" || c.GetFromStatus() != pb.InstanceStatus_INSTANCE_STATUS_FINAL || c.GetReason() != "disk replaced" {
		t.Fatalf("RETRIED change: %v", c)
	}
	// Idempotent by state: a second retry of the same failure changes nothing.
	_, err = env.instances.RetryInstance(ctx, &pb.RetryInstanceRequest{Id: "f-1"})
	wantCode(t, err, codes.FailedPrecondition)

	// It runs again from build, and may fail and be retried again.
	if in := step(t, env, "f-1", "error"); in.GetNode() != "dfsmr.failed" {
		t.Fatalf("second failure: %v", in)
	}
	if r, err := env.instances.RetryInstance(ctx, &pb.RetryInstanceRequest{Id: "f-1"}); err != nil || r.GetInstance().GetNode() != "build" {
		t.Fatalf("second retry: %v %v", r, err)
	}
	if in := step(t, env, "f-1", "ok"); in.GetNode() != "done" {
		t.Fatalf("after the retry: %v", in)
	}

	// Cancelled, finished, missing and bad requests.
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "c-1", Machine: "flaky"}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.instances.CancelInstance(ctx, &pb.CancelInstanceRequest{Id: "c-1"}); err != nil {
		t.Fatal(err)
	}
	_, err = env.instances.RetryInstance(ctx, &pb.RetryInstanceRequest{Id: "c-1"})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = env.instances.RetryInstance(ctx, &pb.RetryInstanceRequest{Id: "f-1"})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = env.instances.RetryInstance(ctx, &pb.RetryInstanceRequest{Id: "nope"})
	wantCode(t, err, codes.NotFound)
	_, err = env.instances.RetryInstance(ctx, &pb.RetryInstanceRequest{})
	wantCode(t, err, codes.InvalidArgument)
}

func ids(t *testing.T, env *testEnv, f *pb.ListInstancesRequest) []string {
	t.Helper()
	resp, err := env.instances.ListInstances(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range resp.GetInstances() {
		out = append(out, in.GetId())
	}
	return out
}

func TestCancelInstancesByFilter(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, flakyYAML)
	define(t, env, orderYAML)
	ctx := context.Background()
	for i := range 5 {
		for _, m := range []string{"flaky", "order"} {
			if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprintf("%s-%d", m, i), Machine: m}); err != nil {
				t.Fatal(err)
			}
		}
	}
	step(t, env, "flaky-0", "ok") // flaky-0 in build, the rest in fetch
	leased, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "flaky", Node: "build"})
	if err != nil || leased.GetInstance().GetId() != "flaky-0" {
		t.Fatalf("Ready: %v %v", leased, err)
	}
	ready := pb.InstanceStatus_INSTANCE_STATUS_READY
	req := &pb.CancelInstancesRequest{Machine: "flaky", Node: "fetch", Status: ready, DryRun: true}
	dry, err := env.instances.CancelInstances(ctx, req)
	want := []string{"flaky-1", "flaky-2", "flaky-3", "flaky-4"}
	if err != nil || dry.GetMatched() != 4 || dry.GetChanged() != 0 || !slices.Equal(dry.GetSampleIds(), want) {
		t.Fatalf("dry run: %v %v", dry, err)
	}
	all := &pb.ListInstancesRequest{Status: ready}
	if got := ids(t, env, all); len(got) != 9 {
		t.Fatalf("a dry run changed instances: READY %v", got)
	}

	// A count that is not the one shown cancels nothing.
	req.DryRun, req.ExpectedCount = false, new(uint32)
	*req.ExpectedCount = 3
	_, err = env.instances.CancelInstances(ctx, req)
	if st := wantCode(t, err, codes.FailedPrecondition); st.Message() != "expected_count is 3 but 4 instances match now: nothing was changed; count again" {
		t.Fatalf("message: %q", st.Message())
	}
	if got := ids(t, env, all); len(got) != 9 {
		t.Fatalf("a count mismatch changed instances: READY %v", got)
	}

	*req.ExpectedCount = 4
	req.Reason = "bad batch"
	res, err := env.instances.CancelInstances(ctx, req)
	if err != nil || res.GetMatched() != 4 || res.GetChanged() != 4 || res.GetSkipped() != 0 {
		t.Fatalf("cancel: %v %v", res, err)
	}
	if got := ids(t, env, &pb.ListInstancesRequest{Node: "dfsmr.aborted", Machine: "flaky"}); !slices.Equal(got, want) {
		t.Fatalf("aborted %v, want %v", got, want)
	}
	if c := lastChange(t, env, "flaky-3"); c.GetKind() != pb.ChangeKind_CHANGE_KIND_CANCELED || c.GetReason() != "bad batch" {
		t.Fatalf("change: %v", c)
	}
	// Nothing else: the leased flaky-0 and every order stay as they were.
	if got := ids(t, env, &pb.ListInstancesRequest{Status: pb.InstanceStatus_INSTANCE_STATUS_LEASED}); !slices.Equal(got, []string{"flaky-0"}) {
		t.Fatalf("leased %v", got)
	}
	if got := ids(t, env, all); len(got) != 5 || got[0] != "order-0" {
		t.Fatalf("READY %v", got)
	}
	// Again: nothing matches any more.
	*req.ExpectedCount = 0
	if res, err := env.instances.CancelInstances(ctx, req); err != nil || res.GetMatched() != 0 || res.GetChanged() != 0 {
		t.Fatalf("second cancel: %v %v", res, err)
	}

	for _, bad := range []*pb.CancelInstancesRequest{
		{},
		{DryRun: true},
		{Node: "fetch"},
		{Machine: "flaky", Status: pb.InstanceStatus_INSTANCE_STATUS_FINAL},
		{Machine: "flaky", Status: 99},
		{Machine: "flaky", Reason: "\x00"},
	} {
		_, err := env.instances.CancelInstances(ctx, bad)
		wantCode(t, err, codes.InvalidArgument)
	}
	// all: every instance that is not FINAL.
	res, err = env.instances.CancelInstances(ctx, &pb.CancelInstancesRequest{All: true})
	if err != nil || res.GetMatched() != 6 || res.GetChanged() != 6 {
		t.Fatalf("cancel all: %v %v", res, err)
	}
}

func TestRetryInstancesByFilter(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, flakyYAML)
	ctx := context.Background()
	failIn(t, env, "a", "fetch")
	failIn(t, env, "b", "build")
	failIn(t, env, "c", "fetch")
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "d", Machine: "flaky"}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.instances.CancelInstance(ctx, &pb.CancelInstanceRequest{Id: "d"}); err != nil {
		t.Fatal(err)
	}

	dry, err := env.instances.RetryInstances(ctx, &pb.RetryInstancesRequest{Machine: "flaky", Node: "fetch", DryRun: true})
	if err != nil || dry.GetMatched() != 2 || !slices.Equal(dry.GetSampleIds(), []string{"a", "c"}) {
		t.Fatalf("dry run: %v %v", dry, err)
	}
	n := uint32(1)
	_, err = env.instances.RetryInstances(ctx, &pb.RetryInstancesRequest{Machine: "flaky", Node: "fetch", ExpectedCount: &n})
	wantCode(t, err, codes.FailedPrecondition)
	if got := ids(t, env, &pb.ListInstancesRequest{Machine: "flaky", Node: "dfsmr.failed"}); len(got) != 3 {
		t.Fatalf("a count mismatch retried instances: failed %v", got)
	}

	n = 2
	res, err := env.instances.RetryInstances(ctx, &pb.RetryInstancesRequest{Machine: "flaky", Node: "fetch", ExpectedCount: &n})
	if err != nil || res.GetChanged() != 2 {
		t.Fatalf("retry: %v %v", res, err)
	}
	if got := ids(t, env, &pb.ListInstancesRequest{Machine: "flaky", Node: "fetch"}); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("in fetch: %v", got)
	}
	if got := ids(t, env, &pb.ListInstancesRequest{Machine: "flaky", Node: "dfsmr.failed"}); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("still failed: %v", got)
	}
	res, err = env.instances.RetryInstances(ctx, &pb.RetryInstancesRequest{All: true})
	if err != nil || res.GetMatched() != 1 || res.GetChanged() != 1 || !slices.Equal(res.GetSampleIds(), []string{"b"}) {
		t.Fatalf("retry all: %v %v", res, err)
	}
	for _, bad := range []*pb.RetryInstancesRequest{{}, {Node: "fetch"}, {DryRun: true}} {
		_, err := env.instances.RetryInstances(ctx, bad)
		wantCode(t, err, codes.InvalidArgument)
	}
}
