package forward

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Instance ids and device nodes that make the test handlers fail or
// block instead of answering.
const (
	idFail    = "fail"
	idBlock   = "block"
	idBig     = "big"
	nodeFail  = "fail"
	nodeBlock = "block"
)

// bigBytes is more than gRPC's default limit of a received message (4 MiB).
const bigBytes = 5 << 20

// guard bounds the wait for something another goroutine does; the tests
// never sleep.
const guard = 10 * time.Second

// leaderFunc is a settable Options.Leader.
type leaderFunc struct {
	mu   sync.Mutex
	addr string
	self bool
	err  error
}

func (l *leaderFunc) get() (string, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr, l.self, l.err
}

func (l *leaderFunc) set(addr string, self bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addr, l.self, l.err = addr, self, err
}

// testService answers with the name of the server it runs on, records
// what it saw, and fails or blocks on request.
type testService struct {
	pb.UnimplementedInstanceServiceServer
	pb.UnimplementedDeviceServiceServer
	pb.UnimplementedChangesServiceServer
	pb.UnimplementedAdminServiceServer

	name    string
	calls   atomic.Int64
	md      chan metadata.MD // the incoming metadata of StartInstance, if there is room
	started chan struct{}    // a blocking handler started
	ended   chan error       // a blocking handler saw its context end, with ctx.Err()
}

// failure is the status with details the handlers fail with.
func failure() error {
	st, err := status.New(codes.FailedPrecondition, "instance is FINAL").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "id", Description: "is FINAL"}},
	})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func (s *testService) block(ctx context.Context) error {
	s.started <- struct{}{}
	<-ctx.Done()
	s.ended <- ctx.Err()
	return ctx.Err()
}

// record offers the incoming metadata of the call of ctx on s.md, with
// test-saw-deadline: yes when the call has a deadline.
func (s *testService) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	if _, ok := ctx.Deadline(); ok {
		md = metadata.Join(md, metadata.Pairs("test-saw-deadline", "yes"))
	}
	select {
	case s.md <- md:
	default:
	}
}

func (s *testService) StartInstance(ctx context.Context, req *pb.StartInstanceRequest) (*pb.StartInstanceResponse, error) {
	s.calls.Add(1)
	s.record(ctx)
	switch req.GetId() {
	case idFail:
		return nil, failure()
	case idBlock:
		return nil, s.block(ctx)
	case idBig:
		return &pb.StartInstanceResponse{Instance: &pb.Instance{Id: idBig, Node: s.name, Machine: strings.Repeat("m", bigBytes)}}, nil
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("served-by", s.name))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("trailer-by", s.name))
	return &pb.StartInstanceResponse{Instance: &pb.Instance{Id: req.GetId(), Machine: req.GetMachine(), Node: s.name}, Created: true}, nil
}

func (s *testService) GetInstance(_ context.Context, req *pb.GetInstanceRequest) (*pb.GetInstanceResponse, error) {
	s.calls.Add(1)
	return &pb.GetInstanceResponse{Instance: &pb.Instance{Id: req.GetId(), Node: s.name}}, nil
}

// Connect sends its header at once, echoes every report with its own name,
// and says "bye" when the client half-closes.
func (s *testService) Connect(stream grpc.BidiStreamingServer[pb.ConnectRequest, pb.ConnectResponse]) error {
	s.calls.Add(1)
	s.record(stream.Context())
	if err := stream.SendHeader(metadata.Pairs("served-by", s.name)); err != nil {
		return err
	}
	stream.SetTrailer(metadata.Pairs("trailer-by", s.name))
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return stream.Send(&pb.ConnectResponse{Command: &pb.DeviceCommand{Name: "bye", Node: s.name}})
		}
		if err != nil {
			return err
		}
		switch req.GetReport().GetNode() {
		case nodeFail:
			return failure()
		case nodeBlock:
			return s.block(stream.Context())
		}
		if err := stream.Send(&pb.ConnectResponse{
			ReportSeq: req.GetReport().GetSeq(),
			Command:   &pb.DeviceCommand{Name: s.name, Node: req.GetReport().GetNode()},
		}); err != nil {
			return err
		}
	}
}

func (s *testService) Changes(_ *pb.ChangesRequest, stream grpc.ServerStreamingServer[pb.ChangesResponse]) error {
	s.calls.Add(1)
	return stream.Send(&pb.ChangesResponse{Change: &pb.Change{Seq: 1, Actor: s.name}})
}

func (s *testService) Backup(_ *pb.BackupRequest, stream grpc.ServerStreamingServer[pb.BackupResponse]) error {
	s.calls.Add(1)
	stream.SetTrailer(metadata.Pairs("trailer-by", s.name))
	for _, c := range []string{"chunk 1 of " + s.name, "chunk 2 of " + s.name} {
		if err := stream.Send(&pb.BackupResponse{Chunk: []byte(c)}); err != nil {
			return err
		}
	}
	return nil
}

// node is one test server: the dfsmr services behind a Forwarder.
type node struct {
	name      string
	addr      string
	leader    *leaderFunc
	fwd       *Forwarder
	svc       *testService
	connEnded chan struct{} // a connection to this server closed
}

// mustNode starts a server named name on 127.0.0.1:0 whose leader is
// given by leader, and stops it when the test ends.
func mustNode(tb testing.TB, name string, leader *leaderFunc) *node {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	n := &node{
		name:   name,
		addr:   lis.Addr().String(),
		leader: leader,
		svc: &testService{name: name, md: make(chan metadata.MD, 1),
			started: make(chan struct{}, 1), ended: make(chan error, 1)},
		connEnded: make(chan struct{}, 8),
	}
	n.fwd = New(Options{
		Leader: leader.get,
		Dial:   []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Name:   name,
		Logger: testLogger(tb),
	})
	srv := grpc.NewServer(append(n.fwd.ServerOptions(),
		grpc.StatsHandler(connEnds(n.connEnded)),
		grpc.ChainUnaryInterceptor(n.fwd.Unary()),
		grpc.ChainStreamInterceptor(n.fwd.Stream()))...)
	pb.RegisterInstanceServiceServer(srv, n.svc)
	pb.RegisterDeviceServiceServer(srv, n.svc)
	pb.RegisterChangesServiceServer(srv, n.svc)
	pb.RegisterAdminServiceServer(srv, n.svc)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tb.Cleanup(func() {
		srv.Stop()
		if err := n.fwd.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return n
}

// mustLeaderAndFollower starts a leader and a follower that forwards to it.
func mustLeaderAndFollower(tb testing.TB) (leader, follower *node) {
	tb.Helper()
	leader = mustNode(tb, "leader", &leaderFunc{self: true})
	follower = mustNode(tb, "follower", &leaderFunc{addr: leader.addr})
	return leader, follower
}

// mustConn returns a client connection to addr, closed when the test ends.
func mustConn(tb testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// connEnds is a stats handler that signals every closed connection.
type connEnds chan struct{}

func (c connEnds) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (c connEnds) HandleRPC(context.Context, stats.RPCStats)                         {}
func (c connEnds) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c connEnds) HandleConn(_ context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnEnd); ok {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ tb testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.tb.Helper(); w.tb.Log(string(p)); return len(p), nil }

// bounded returns a context that ends after guard, so that a call that
// should have ended fails the test instead of hanging it.
func bounded(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(tb.Context(), guard)
	tb.Cleanup(cancel)
	return ctx
}

// wait returns what ch delivers, failing the test when nothing comes.
func wait[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(guard):
		tb.Fatalf("waited %v for %s", guard, what)
		panic("unreachable")
	}
}

// rawCodec lets a test client receive frames, to compare the bytes.
var rawCodec = codec{next: encoding.GetCodecV2("proto")}

func TestUnaryWriteServedByLeaderWithTheSameBytes(t *testing.T) {
	leader, follower := mustLeaderAndFollower(t)
	req := &pb.StartInstanceRequest{Id: "a", Machine: "report"}
	raw := func(addr string) []byte {
		var resp Frame
		err := mustConn(t, addr).Invoke(bounded(t), pb.InstanceService_StartInstance_FullMethodName, req, &resp, grpc.ForceCodecV2(rawCodec))
		if err != nil {
			t.Fatalf("StartInstance on %s: %v", addr, err)
		}
		return resp.Bytes()
	}
	direct, forwarded := raw(leader.addr), raw(follower.addr)
	if string(direct) != string(forwarded) {
		t.Errorf("forwarded response bytes %x, want the leader's %x", forwarded, direct)
	}
	var resp pb.StartInstanceResponse
	if err := proto.Unmarshal(forwarded, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.GetInstance().GetNode() != "leader" {
		t.Errorf("served by %q, want the leader", resp.GetInstance().GetNode())
	}
	if n := follower.svc.calls.Load(); n != 0 {
		t.Errorf("the follower's handler ran %d times", n)
	}
	if n := leader.svc.calls.Load(); n != 2 {
		t.Errorf("the leader's handler ran %d times, want 2", n)
	}
}

func TestLargeResponseForwarded(t *testing.T) {
	_, follower := mustLeaderAndFollower(t)
	cc := mustConn(t, follower.addr, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(2*bigBytes)))
	resp, err := pb.NewInstanceServiceClient(cc).StartInstance(bounded(t), &pb.StartInstanceRequest{Id: idBig})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(resp.GetInstance().GetMachine()); got != bigBytes || resp.GetInstance().GetNode() != "leader" {
		t.Errorf("got %d bytes from %q, want %d from the leader", got, resp.GetInstance().GetNode(), bigBytes)
	}
}

func TestReadsServedLocally(t *testing.T) {
	leader, follower := mustLeaderAndFollower(t)
	cc := mustConn(t, follower.addr)
	got, err := pb.NewInstanceServiceClient(cc).GetInstance(bounded(t), &pb.GetInstanceRequest{Id: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetInstance().GetNode() != "follower" {
		t.Errorf("GetInstance served by %q, want the follower", got.GetInstance().GetNode())
	}
	changes, err := pb.NewChangesServiceClient(cc).Changes(bounded(t), &pb.ChangesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := changes.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if c.GetChange().GetActor() != "follower" {
		t.Errorf("Changes served by %q, want the follower", c.GetChange().GetActor())
	}
	if _, err := changes.Recv(); err != io.EOF {
		t.Errorf("Changes ended with %v, want EOF", err)
	}
	if n := leader.svc.calls.Load(); n != 0 {
		t.Errorf("the leader's handlers ran %d times for reads", n)
	}
}

func TestBidiStreamForwardedBothWaysWithHalfClose(t *testing.T) {
	leader, follower := mustLeaderAndFollower(t)
	ctx := metadata.AppendToOutgoingContext(bounded(t), "authorization", "Bearer s3cret")
	stream, err := pb.NewDeviceServiceClient(mustConn(t, follower.addr)).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	md := wait(t, leader.svc.md, "the leader's metadata")
	for k, want := range map[string][]string{
		"authorization":     {"Bearer s3cret"},
		ForwardedByHeader:   {"follower"},
		"test-saw-deadline": {"yes"},
	} {
		if got := md.Get(k); !slices.Equal(got, want) {
			t.Errorf("the leader got %s = %q, want %q", k, got, want)
		}
	}
	// The leader sends its header before any message: it arrives before
	// the client sends anything.
	header, err := stream.Header()
	if err != nil {
		t.Fatal(err)
	}
	if got := header.Get("served-by"); !slices.Equal(got, []string{"leader"}) {
		t.Errorf("header served-by = %q, want [leader]", got)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if err := stream.Send(&pb.ConnectRequest{Report: &pb.DeviceReport{Seq: seq, Node: "printing"}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetReportSeq() != seq || resp.GetCommand().GetName() != "leader" || resp.GetCommand().GetNode() != "printing" {
			t.Errorf("echo of report %d = %v, want the leader's echo", seq, resp)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("after half-close: %v, want the leader's bye", err)
	}
	if resp.GetCommand().GetName() != "bye" {
		t.Errorf("after half-close got %v, want bye", resp)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("stream ended with %v, want EOF (OK)", err)
	}
	if got := stream.Trailer().Get("trailer-by"); !slices.Equal(got, []string{"leader"}) {
		t.Errorf("trailer trailer-by = %q, want [leader]", got)
	}
	if n := follower.svc.calls.Load(); n != 0 {
		t.Errorf("the follower's handler ran %d times", n)
	}
	if n := leader.svc.calls.Load(); n != 1 {
		t.Errorf("the leader's handler ran %d times, want 1", n)
	}
}

func TestServerStreamForwarded(t *testing.T) {
	_, follower := mustLeaderAndFollower(t)
	stream, err := pb.NewAdminServiceClient(mustConn(t, follower.addr)).Backup(bounded(t), &pb.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var chunks []string
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, string(resp.GetChunk()))
	}
	if want := []string{"chunk 1 of leader", "chunk 2 of leader"}; !slices.Equal(chunks, want) {
		t.Errorf("chunks %q, want %q", chunks, want)
	}
	if got := stream.Trailer().Get("trailer-by"); !slices.Equal(got, []string{"leader"}) {
		t.Errorf("trailer trailer-by = %q, want [leader]", got)
	}
}

func TestLeaderStatusArrivesUnchanged(t *testing.T) {
	leader, follower := mustLeaderAndFollower(t)
	want := status.Convert(failure()).Proto()
	for _, n := range []*node{leader, follower} {
		cc := mustConn(t, n.addr)
		_, err := pb.NewInstanceServiceClient(cc).StartInstance(bounded(t), &pb.StartInstanceRequest{Id: idFail})
		if got := status.Convert(err).Proto(); !proto.Equal(got, want) {
			t.Errorf("unary status via %s = %v, want %v", n.name, got, want)
		}
		stream, err := pb.NewDeviceServiceClient(cc).Connect(bounded(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&pb.ConnectRequest{Report: &pb.DeviceReport{Node: nodeFail}}); err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		if got := status.Convert(err).Proto(); !proto.Equal(got, want) {
			t.Errorf("stream status via %s = %v, want %v", n.name, got, want)
		}
	}
}

func TestMetadataForwarded(t *testing.T) {
	leader, follower := mustLeaderAndFollower(t)
	cc := mustConn(t, follower.addr, grpc.WithUserAgent("test-client"))
	ctx := metadata.AppendToOutgoingContext(bounded(t),
		"authorization", "Bearer s3cret", "x-request-id", "req-1", "x-tag-bin", string([]byte{0, 1, 2}),
		// Hop-by-hop: describes the client's own retries, not the follower's.
		"grpc-previous-rpc-attempts", "3")
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var header, trailer metadata.MD
	_, err := pb.NewInstanceServiceClient(cc).StartInstance(ctx, &pb.StartInstanceRequest{Id: "a"},
		grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	md := wait(t, leader.svc.md, "the leader's metadata")
	for k, want := range map[string][]string{
		"authorization":     {"Bearer s3cret"},
		"x-request-id":      {"req-1"},
		"x-tag-bin":         {string([]byte{0, 1, 2})},
		ForwardedByHeader:   {"follower"},
		":authority":        {leader.addr},
		"test-saw-deadline": {"yes"},
	} {
		if got := md.Get(k); !slices.Equal(got, want) {
			t.Errorf("the leader got %s = %q, want %q", k, got, want)
		}
	}
	if got := md.Get("grpc-previous-rpc-attempts"); len(got) != 0 {
		t.Errorf("the leader got the hop-by-hop grpc-previous-rpc-attempts %q", got)
	}
	if ua := md.Get("user-agent"); len(ua) != 1 || strings.Contains(ua[0], "test-client") {
		t.Errorf("the leader got user-agent %q, want only the follower's own", ua)
	}
	if got := header.Get("served-by"); !slices.Equal(got, []string{"leader"}) {
		t.Errorf("header served-by = %q, want [leader]", got)
	}
	if got := trailer.Get("trailer-by"); !slices.Equal(got, []string{"leader"}) {
		t.Errorf("trailer trailer-by = %q, want [leader]", got)
	}
}

func TestNoLeaderIsUnavailable(t *testing.T) {
	leader, follower := mustLeaderAndFollower(t)
	follower.leader.set("", false, errors.New("an election is under way"))
	cc := mustConn(t, follower.addr)
	_, err := pb.NewInstanceServiceClient(cc).StartInstance(bounded(t), &pb.StartInstanceRequest{Id: "a"})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "an election is under way") {
		t.Errorf("unary: %v, want UNAVAILABLE naming the reason", err)
	}
	stream, err := pb.NewDeviceServiceClient(cc).Connect(bounded(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream: %v, want UNAVAILABLE", err)
	}
	if _, err := pb.NewInstanceServiceClient(cc).GetInstance(bounded(t), &pb.GetInstanceRequest{Id: "a"}); err != nil {
		t.Errorf("a read without a leader: %v, want it served", err)
	}
	if n := leader.svc.calls.Load(); n != 0 {
		t.Errorf("the leader's handlers ran %d times", n)
	}
}

func TestForwardedCallNotForwardedAgain(t *testing.T) {
	leader, follower := mustLeaderAndFollower(t)
	// As if a third server forwarded the call here, believing this one led.
	ctx := metadata.AppendToOutgoingContext(bounded(t), ForwardedByHeader, "third")
	cc := mustConn(t, follower.addr)
	_, err := pb.NewInstanceServiceClient(cc).StartInstance(ctx, &pb.StartInstanceRequest{Id: "a"})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "not the leader; retry") {
		t.Errorf("unary: %v, want UNAVAILABLE not the leader; retry", err)
	}
	stream, err := pb.NewDeviceServiceClient(cc).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream: %v, want UNAVAILABLE", err)
	}
	if n := leader.svc.calls.Load(); n != 0 {
		t.Errorf("the call was forwarded again: the leader's handlers ran %d times", n)
	}
}

func TestLeaderUnreachableIsUnavailable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := lis.Addr().String()
	lis.Close()
	follower := mustNode(t, "follower", &leaderFunc{addr: gone})
	cc := mustConn(t, follower.addr)
	_, err = pb.NewInstanceServiceClient(cc).StartInstance(bounded(t), &pb.StartInstanceRequest{Id: "a"})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("unary: %v, want UNAVAILABLE", err)
	}
	stream, err := pb.NewDeviceServiceClient(cc).Connect(bounded(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream: %v, want UNAVAILABLE", err)
	}
}

func TestClientCancelReachesLeader(t *testing.T) {
	t.Run("stream", func(t *testing.T) {
		leader, follower := mustLeaderAndFollower(t)
		ctx, cancel := context.WithCancel(bounded(t))
		defer cancel()
		stream, err := pb.NewDeviceServiceClient(mustConn(t, follower.addr)).Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&pb.ConnectRequest{Report: &pb.DeviceReport{Node: nodeBlock}}); err != nil {
			t.Fatal(err)
		}
		wait(t, leader.svc.started, "the leader's handler to start")
		cancel()
		if err := wait(t, leader.svc.ended, "the leader's stream to end"); !errors.Is(err, context.Canceled) {
			t.Errorf("the leader's stream ended with %v, want canceled", err)
		}
	})
	t.Run("unary", func(t *testing.T) {
		leader, follower := mustLeaderAndFollower(t)
		ctx, cancel := context.WithCancel(bounded(t))
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := pb.NewInstanceServiceClient(mustConn(t, follower.addr)).StartInstance(ctx, &pb.StartInstanceRequest{Id: idBlock})
			done <- err
		}()
		wait(t, leader.svc.started, "the leader's handler to start")
		cancel()
		if err := wait(t, leader.svc.ended, "the leader's call to end"); !errors.Is(err, context.Canceled) {
			t.Errorf("the leader's call ended with %v, want canceled", err)
		}
		if err := wait(t, done, "the client's call to end"); status.Code(err) != codes.Canceled {
			t.Errorf("the client's call ended with %v, want CANCELED", err)
		}
	})
}

func TestLeaderChangeDropsTheOldConnection(t *testing.T) {
	for _, tc := range []struct {
		name   string
		notice func(follower *node) // how the follower learns of the change
	}{
		{"at the next call", func(*node) {}},
		{"LeaderChanged", func(follower *node) { follower.fwd.LeaderChanged() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustNode(t, "a", &leaderFunc{self: true})
			b := mustNode(t, "b", &leaderFunc{self: true})
			follower := mustNode(t, "follower", &leaderFunc{addr: a.addr})
			cc := mustConn(t, follower.addr)
			start := func() string {
				t.Helper()
				resp, err := pb.NewInstanceServiceClient(cc).StartInstance(bounded(t), &pb.StartInstanceRequest{Id: "x"})
				if err != nil {
					t.Fatal(err)
				}
				return resp.GetInstance().GetNode()
			}
			if got := start(); got != "a" {
				t.Fatalf("served by %q, want a", got)
			}
			stream, err := pb.NewDeviceServiceClient(cc).Connect(bounded(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&pb.ConnectRequest{Report: &pb.DeviceReport{Seq: 1}}); err != nil {
				t.Fatal(err)
			}
			if resp, err := stream.Recv(); err != nil || resp.GetCommand().GetName() != "a" {
				t.Fatalf("echo %v, %v; want a's", resp, err)
			}

			follower.leader.set(b.addr, false, nil)
			tc.notice(follower)
			if got := start(); got != "b" {
				t.Errorf("after the change served by %q, want b", got)
			}
			wait(t, a.connEnded, "the connection to the old leader to close")
			_, err = stream.Recv()
			if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "retry") {
				t.Errorf("the stream to the old leader ended with %v, want UNAVAILABLE", err)
			}
		})
	}
}

func TestClosedForwarderIsUnavailable(t *testing.T) {
	_, follower := mustLeaderAndFollower(t)
	cc := mustConn(t, follower.addr)
	stream, err := pb.NewDeviceServiceClient(cc).Connect(bounded(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.ConnectRequest{Report: &pb.DeviceReport{Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := follower.fwd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("a stream forwarded at Close: %v, want UNAVAILABLE", err)
	}
	_, err = pb.NewInstanceServiceClient(cc).StartInstance(bounded(t), &pb.StartInstanceRequest{Id: "a"})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("after Close: %v, want UNAVAILABLE", err)
	}
}

// BenchmarkUnary compares StartInstance on the leader with the same call
// forwarded by a follower.
func BenchmarkUnary(b *testing.B) {
	leader, follower := mustLeaderAndFollower(b)
	req := &pb.StartInstanceRequest{Id: "bench-instance", Machine: "report", Params: map[string]string{"url": "https://example.org/report/1"}}
	for _, n := range []*node{leader, follower} {
		b.Run(map[string]string{"leader": "direct", "follower": "forwarded"}[n.name], func(b *testing.B) {
			c := pb.NewInstanceServiceClient(mustConn(b, n.addr))
			for b.Loop() {
				if _, err := c.StartInstance(b.Context(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
