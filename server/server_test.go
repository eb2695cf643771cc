package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// testEnv is a real server on a loopback port over a real bbolt file, and a
// client connection to it.
type testEnv struct {
	srv       *server.Server
	conn      *grpc.ClientConn
	db        string
	machines  pb.MachineServiceClient
	instances pb.InstanceServiceClient
	work      pb.WorkServiceClient
	changes   pb.ChangesServiceClient
}

type tlogWriter struct{ tb testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func mustServer(tb testing.TB, cfg server.Config) *testEnv {
	tb.Helper()
	if cfg.DB == "" {
		cfg.DB = filepath.Join(tb.TempDir(), "dfsmr.db")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(tlogWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx := context.Background()
	s, err := server.New(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Start(ctx, nil); err != nil {
		tb.Fatal(err)
	}
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	env := &testEnv{
		srv: s, conn: conn, db: cfg.DB,
		machines:  pb.NewMachineServiceClient(conn),
		instances: pb.NewInstanceServiceClient(conn),
		work:      pb.NewWorkServiceClient(conn),
		changes:   pb.NewChangesServiceClient(conn),
	}
	tb.Cleanup(func() { env.stop(tb) })
	return env
}

func (e *testEnv) stop(tb testing.TB) {
	tb.Helper()
	e.conn.Close()
	if err := e.srv.Stop(context.Background()); err != nil {
		tb.Error(err)
	}
}

func wantCode(t *testing.T, err error, code codes.Code) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("err = %v, want code %s", err, code)
	}
	return st
}

func TestServicesListedByReflection(t *testing.T) {
	env := mustServer(t, server.Config{})
	ctx := context.Background()
	stream, err := reflectionpb.NewServerReflectionClient(env.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"dfsmr.v1.MachineService", "dfsmr.v1.InstanceService", "dfsmr.v1.WorkService", "dfsmr.v1.ChangesService", "dfsmr.v1.AdminService", "dfsmr.v1.ClusterService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v; %s missing", names, want)
		}
	}
	// describe works without .proto files: the file descriptor is served.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "dfsmr.v1.WorkService"}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Fatalf("describe WorkService: %v %v", resp, err)
	}
	h, err := healthpb.NewHealthClient(env.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
}

func TestBundledMachinesListed(t *testing.T) {
	env := mustServer(t, server.Config{})
	resp, err := env.machines.ListMachines(context.Background(), &pb.ListMachinesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range resp.GetMachines() {
		ids = append(ids, m.GetId())
	}
	if want := []string{"crawler", "print_job", "printer", "report"}; !slices.Equal(ids, want) {
		t.Fatalf("machines = %v, want %v", ids, want)
	}
}

const orderYAML = `id: order
nodes:
  new:
    start: true
    timeout: 10s
    retry: {max_attempts: 2, backoff: fixed, initial: 1s, jitter: 0}
    transitions:
      ok: shipped
      error: new
      later: {to: new, delay: 30s}
      hold: {to: held, signal: true}
  held:
    transitions: {release: {to: new, signal: true}}
  shipped: {final: true}
`

func define(t *testing.T, env *testEnv, src string) *pb.Machine {
	t.Helper()
	resp, err := env.machines.DefineMachine(context.Background(), &pb.DefineMachineRequest{Source: src, FileName: "order.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetMachine()
}

func TestDefineMachineVersions(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	ctx := context.Background()
	m1 := define(t, env, orderYAML)
	if m1.GetVersion() != 1 || len(m1.GetNodes()) != 3 || m1.GetStartNode() != "new" {
		t.Fatalf("v1 = %v", m1)
	}
	// Same content, other formatting: same version, not created.
	resp, err := env.machines.DefineMachine(ctx, &pb.DefineMachineRequest{Source: "# comment\n" + orderYAML})
	if err != nil || resp.GetCreated() || resp.GetMachine().GetVersion() != 1 {
		t.Fatalf("identical define: %v %v", resp, err)
	}
	m2 := define(t, env, strings.Replace(orderYAML, "timeout: 10s", "timeout: 20s", 1))
	if m2.GetVersion() != 2 {
		t.Fatalf("changed define: version %d", m2.GetVersion())
	}
	got, err := env.machines.GetMachine(ctx, &pb.GetMachineRequest{Id: "order"})
	if err != nil || got.GetMachine().GetVersion() != 2 || !slices.Equal(got.GetVersions(), []uint32{1, 2}) {
		t.Fatalf("GetMachine latest: %v %v", got, err)
	}
	got, err = env.machines.GetMachine(ctx, &pb.GetMachineRequest{Id: "order", Version: 1})
	if err != nil || got.GetMachine().GetNodes()[0].GetTimeout().GetFixed().AsDuration() != 10*time.Second {
		t.Fatalf("GetMachine v1: %v %v", got, err)
	}
	_, err = env.machines.GetMachine(ctx, &pb.GetMachineRequest{Id: "order", Version: 9})
	wantCode(t, err, codes.NotFound)
	_, err = env.machines.GetMachine(ctx, &pb.GetMachineRequest{Id: "nope"})
	wantCode(t, err, codes.NotFound)
}

func TestMalformedDefinitionNamesLineAndColumn(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	bad := strings.Replace(orderYAML, "ok: shipped", "ok: shiped", 1)
	_, err := env.machines.DefineMachine(context.Background(), &pb.DefineMachineRequest{Source: bad, FileName: "order.yaml"})
	st := wantCode(t, err, codes.InvalidArgument)
	if !strings.Contains(st.Message(), "order.yaml:8:") {
		t.Fatalf("message %q does not name order.yaml line 8", st.Message())
	}
	var br *errdetails.BadRequest
	for _, d := range st.Details() {
		if b, ok := d.(*errdetails.BadRequest); ok {
			br = b
		}
	}
	if br == nil || len(br.GetFieldViolations()) == 0 || !strings.Contains(br.GetFieldViolations()[0].GetDescription(), "order.yaml:8:11") {
		t.Fatalf("details = %v", st.Details())
	}
	list, err := env.machines.ListMachines(context.Background(), &pb.ListMachinesRequest{})
	if err != nil || len(list.GetMachines()) != 0 {
		t.Fatalf("a rejected definition was stored: %v %v", list, err)
	}
}

func TestStartIsIdempotentByID(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, orderYAML)
	ctx := context.Background()
	req := &pb.StartInstanceRequest{Id: "o-1", Machine: "order", Params: map[string]string{"sku": "42"}, Priority: 3}
	first, err := env.instances.StartInstance(ctx, req)
	if err != nil || !first.GetCreated() {
		t.Fatalf("first start: %v %v", first, err)
	}
	again, err := env.instances.StartInstance(ctx, req)
	if err != nil || again.GetCreated() || again.GetInstance().GetRev() != first.GetInstance().GetRev() {
		t.Fatalf("repeat start: %v %v", again, err)
	}
	req.Params = map[string]string{"sku": "43"}
	_, err = env.instances.StartInstance(ctx, req)
	wantCode(t, err, codes.AlreadyExists)
	_, err = env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "o-2", Machine: "nope"})
	wantCode(t, err, codes.NotFound)
	_, err = env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "bad\x01id", Machine: "order"})
	wantCode(t, err, codes.InvalidArgument)
	gen, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Machine: "order"})
	if err != nil || !strings.HasPrefix(gen.GetInstance().GetId(), "order-") {
		t.Fatalf("generated id: %v %v", gen, err)
	}
}

func lease(t *testing.T, env *testEnv, machine string) *pb.ReadyResponse {
	t.Helper()
	r, err := env.work.Ready(context.Background(), &pb.ReadyRequest{Worker: "w1", Machine: machine})
	if err != nil || r.GetLease() == nil {
		t.Fatalf("Ready: %v %v", r, err)
	}
	return r
}

func TestLeaseTransitionErrors(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, orderYAML)
	ctx := context.Background()
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "o-1", Machine: "order"}); err != nil {
		t.Fatal(err)
	}
	r := lease(t, env, "order")
	tok := r.GetLease().GetToken()

	// An illegal transition is refused and changes nothing.
	_, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: "o-1", Token: tok, Transition: "release"})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = env.work.Transition(ctx, &pb.TransitionRequest{Id: "o-1", Token: tok, Transition: "hold"})
	wantCode(t, err, codes.FailedPrecondition) // a signal, not the worker's to take

	// Relinquish, lease again: the first token is now stale.
	if _, err := env.work.Relinquish(ctx, &pb.RelinquishRequest{Id: "o-1", Token: tok}); err != nil {
		t.Fatal(err)
	}
	r2 := lease(t, env, "order")
	if r2.GetLease().GetToken() <= tok {
		t.Fatalf("token did not grow: %d then %d", tok, r2.GetLease().GetToken())
	}
	before, _ := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "o-1"})
	_, err = env.work.Transition(ctx, &pb.TransitionRequest{Id: "o-1", Token: tok, Transition: "ok"})
	wantCode(t, err, codes.Aborted)
	_, err = env.work.Heartbeat(ctx, &pb.HeartbeatRequest{Id: "o-1", Token: tok})
	wantCode(t, err, codes.Aborted)
	after, _ := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "o-1"})
	if after.GetInstance().GetRev() != before.GetInstance().GetRev() {
		t.Fatal("a stale token changed the instance")
	}

	// The live token works; a retry with the same request id is answered
	// without effect; without it the token is stale.
	tr := &pb.TransitionRequest{Id: "o-1", Token: r2.GetLease().GetToken(), Transition: "ok", RequestId: "req-1"}
	done, err := env.work.Transition(ctx, tr)
	if err != nil || done.GetInstance().GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_FINAL || done.GetInstance().GetNode() != "shipped" {
		t.Fatalf("Transition: %v %v", done, err)
	}
	again, err := env.work.Transition(ctx, tr)
	if err != nil || again.GetInstance().GetRev() != done.GetInstance().GetRev() {
		t.Fatalf("retried Transition: %v %v", again, err)
	}
	tr.RequestId = ""
	_, err = env.work.Transition(ctx, tr)
	wantCode(t, err, codes.Aborted)
	_, err = env.instances.CancelInstance(ctx, &pb.CancelInstanceRequest{Id: "o-1"})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = env.work.Transition(ctx, &pb.TransitionRequest{Id: "nope", Token: 1, Transition: "ok"})
	wantCode(t, err, codes.NotFound)
	_, err = env.work.Transition(ctx, &pb.TransitionRequest{Id: "o-1", Transition: "ok"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Wait: durationpb.New(time.Hour)})
	wantCode(t, err, codes.InvalidArgument)
}

func TestSignalAndCancel(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, orderYAML)
	ctx := context.Background()
	for _, id := range []string{"o-1", "o-2"} {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "order"}); err != nil {
			t.Fatal(err)
		}
	}
	r := lease(t, env, "order")
	id := r.GetInstance().GetId()
	s, err := env.instances.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: id, Signal: "hold", Params: map[string]string{"by": "ops"}})
	if err != nil || s.GetInstance().GetNode() != "held" || s.GetInstance().GetParams()["by"] != "ops" {
		t.Fatalf("signal: %v %v", s, err)
	}
	// The signal revoked the worker's lease.
	_, err = env.work.Transition(ctx, &pb.TransitionRequest{Id: id, Token: r.GetLease().GetToken(), Transition: "ok"})
	wantCode(t, err, codes.Aborted)
	_, err = env.instances.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: id, Signal: "ok"})
	wantCode(t, err, codes.FailedPrecondition)
	c, err := env.instances.CancelInstance(ctx, &pb.CancelInstanceRequest{Id: "o-2", Reason: "customer cancelled"})
	if err != nil || c.GetInstance().GetNode() != "dfsmr.aborted" || c.GetInstance().GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_FINAL {
		t.Fatalf("cancel: %v %v", c, err)
	}
	g, err := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "o-2", IncludeHistory: true})
	if err != nil {
		t.Fatal(err)
	}
	h := g.GetInstance().GetHistory()
	if len(h) != 2 || h[0].GetKind() != pb.ChangeKind_CHANGE_KIND_STARTED || h[1].GetKind() != pb.ChangeKind_CHANGE_KIND_CANCELED || h[1].GetReason() != "customer cancelled" {
		t.Fatalf("history = %v", h)
	}
}

func TestListInstancesFiltersAndPages(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, orderYAML)
	ctx := context.Background()
	for i := range 25 {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprintf("o-%02d", i), Machine: "order"}); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		lease(t, env, "order")
	}
	var ids []string
	tok := ""
	for {
		resp, err := env.instances.ListInstances(ctx, &pb.ListInstancesRequest{Machine: "order", PageSize: 10, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range resp.GetInstances() {
			ids = append(ids, in.GetId())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if len(ids) != 25 || !slices.IsSorted(ids) {
		t.Fatalf("paged ids = %v", ids)
	}
	leased, err := env.instances.ListInstances(ctx, &pb.ListInstancesRequest{Machine: "order", Status: pb.InstanceStatus_INSTANCE_STATUS_LEASED})
	if err != nil || len(leased.GetInstances()) != 5 {
		t.Fatalf("leased = %v %v", leased, err)
	}
	_, err = env.instances.ListInstances(ctx, &pb.ListInstancesRequest{PageToken: "!!"})
	wantCode(t, err, codes.InvalidArgument)
}

func TestReadyOrder(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, orderYAML)
	ctx := context.Background()
	for _, s := range []struct {
		id  string
		pri int32
	}{{"c", 0}, {"a", 0}, {"b", 5}, {"d", -1}} {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: s.id, Machine: "order", Priority: s.pri}); err != nil {
			t.Fatal(err)
		}
	}
	// Priority first; c and a started at different times, so age orders
	// them (c first), not their ids.
	var got []string
	for range 4 {
		got = append(got, lease(t, env, "order").GetInstance().GetId())
	}
	if want := []string{"b", "c", "a", "d"}; !slices.Equal(got, want) {
		t.Fatalf("lease order = %v, want %v", got, want)
	}
	r, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "order"})
	if err != nil || r.GetLease() != nil {
		t.Fatalf("Ready on empty queue: %v %v", r, err)
	}
}

// TestCancelledLongPollLeavesNothing: waiters whose calls are cancelled
// are gone from the server, and the next instance goes to a live caller.
// (TestIdleWaitersEachGetOneInstance covers one wake per instance.)
func TestCancelledLongPollLeavesNothing(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, orderYAML)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env.work.Ready(ctx, &pb.ReadyRequest{Worker: fmt.Sprint("w", i), Machine: "order", Wait: durationpb.New(time.Minute)})
		}()
	}
	waitFor(t, func() bool { return env.srv.Engine().Waiting() == 4 })
	cancel()
	wg.Wait()
	// The server notices the cancellation asynchronously; nothing stays.
	waitFor(t, func() bool { return env.srv.Engine().Waiting() == 0 })
	got := make(chan *pb.ReadyResponse, 1)
	go func() {
		r, _ := env.work.Ready(context.Background(), &pb.ReadyRequest{Worker: "live", Machine: "order", Wait: durationpb.New(time.Minute)})
		got <- r
	}()
	waitFor(t, func() bool { return env.srv.Engine().Waiting() == 1 })
	if _, err := env.instances.StartInstance(context.Background(), &pb.StartInstanceRequest{Id: "o-1", Machine: "order"}); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.GetInstance().GetId() != "o-1" {
		t.Fatalf("live waiter got %v", r)
	}
}

// waitFor polls a condition that async work makes true; it fails after 30s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 30s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDelaysAndTimeoutsOnFakeClock(t *testing.T) {
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	env := mustServer(t, server.Config{NoBundled: true, Clock: fake})
	define(t, env, orderYAML)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := env.changes.Changes(ctx, &pb.ChangesRequest{FromSeq: 1, Instance: "o-1"})
	if err != nil {
		t.Fatal(err)
	}
	next := func(kind pb.ChangeKind) *pb.Change {
		t.Helper()
		for {
			c, err := watch.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if c.GetChange().GetKind() == kind {
				return c.GetChange()
			}
		}
	}
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "o-1", Machine: "order"}); err != nil {
		t.Fatal(err)
	}
	r := lease(t, env, "order")
	// A delayed transition parks the instance WAITING for 30s.
	tr, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: "o-1", Token: r.GetLease().GetToken(), Transition: "later"})
	if err != nil || tr.GetInstance().GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_WAITING {
		t.Fatalf("later: %v %v", tr, err)
	}
	fake.Advance(29 * time.Second)
	if r, _ := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "order"}); r.GetLease() != nil {
		t.Fatal("leased before its due time")
	}
	fake.Advance(time.Second)
	next(pb.ChangeKind_CHANGE_KIND_WOKEN)
	r = lease(t, env, "order")
	// The lease times out after the node's 10s: re-offered as attempt 2
	// after the fixed 1s backoff; the old token is then stale.
	fake.Advance(10 * time.Second)
	to := next(pb.ChangeKind_CHANGE_KIND_TIMED_OUT)
	if to.GetAttempt() != 2 || to.GetTransition() != "dfsmr.timeout" {
		t.Fatalf("timeout change = %v", to)
	}
	_, err = env.work.Transition(ctx, &pb.TransitionRequest{Id: "o-1", Token: r.GetLease().GetToken(), Transition: "ok"})
	wantCode(t, err, codes.Aborted)
	fake.Advance(time.Second)
	next(pb.ChangeKind_CHANGE_KIND_WOKEN)
	r = lease(t, env, "order")
	// The second failure uses up max_attempts 2: dfsmr.failed.
	if _, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: "o-1", Token: r.GetLease().GetToken(), Transition: "error", Params: map[string]string{"error": "boom"}}); err != nil {
		t.Fatal(err)
	}
	f := next(pb.ChangeKind_CHANGE_KIND_FAILED)
	if f.GetToNode() != "dfsmr.failed" {
		t.Fatalf("failed change = %v", f)
	}
}

func TestChangesReplayThenTail(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, orderYAML) // seq 1
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 3 {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprint("o-", i), Machine: "order"}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := env.changes.Changes(ctx, &pb.ChangesRequest{FromSeq: 2})
	if err != nil {
		t.Fatal(err)
	}
	for want := uint64(2); want <= 4; want++ {
		c, err := stream.Recv()
		if err != nil || c.GetChange().GetSeq() != want {
			t.Fatalf("replay: %v %v, want seq %d", c, err, want)
		}
	}
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "o-9", Machine: "order"}); err != nil {
		t.Fatal(err)
	}
	c, err := stream.Recv()
	if err != nil || c.GetChange().GetSeq() != 5 || c.GetChange().GetInstance() != "o-9" {
		t.Fatalf("live: %v %v", c, err)
	}
	_, err = env.changes.Changes(ctx, &pb.ChangesRequest{FromSeq: 100})
	if err == nil {
		s, _ := env.changes.Changes(ctx, &pb.ChangesRequest{FromSeq: 100})
		_, err = s.Recv()
	}
	if status.Code(err) != codes.OutOfRange {
		t.Fatalf("from the future: %v", err)
	}
	// Stop ends the stream with UNAVAILABLE, the cue to reconnect.
	go env.srv.Stop(context.Background())
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable && !errors.Is(err, io.EOF) {
		t.Fatalf("stream end on stop: %v", err)
	}
}
