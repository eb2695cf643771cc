package server_test

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/tlsconf/tlstest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// rawCodec sends and receives bytes as they are, so that a test can send
// what no well-behaved client would marshal.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// field appends field name of a message of type md with the bytes v.
func field(b []byte, md protoreflect.MessageDescriptor, name string, v []byte) []byte {
	fd := md.Fields().ByName(protoreflect.Name(name))
	b = protowire.AppendTag(b, fd.Number(), protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func invokeRaw(conn *grpc.ClientConn, method string, req []byte) error {
	var resp []byte
	return conn.Invoke(context.Background(), method, &req, &resp, grpc.ForceCodecV2(rawCodec{}))
}

// wantViolation checks a status for INVALID_ARGUMENT with a violation of
// field.
func wantViolation(t *testing.T, err error, field string) {
	t.Helper()
	st := wantCode(t, err, codes.InvalidArgument)
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return
				}
			}
		}
	}
	t.Fatalf("%v: no violation of field %q", err, field)
}

func TestMalformedRequestsAreInvalidArgument(t *testing.T) {
	env := mustServer(t, server.Config{})
	bad := []byte("ok\xff\xfe")

	desc := func(m proto.Message) protoreflect.MessageDescriptor { return m.ProtoReflect().Descriptor() }
	err := invokeRaw(env.conn, pb.InstanceService_GetInstance_FullMethodName, field(nil, desc(&pb.GetInstanceRequest{}), "id", bad))
	wantViolation(t, err, "id")

	// A map value: params is a repeated entry message of key and value.
	start := desc(&pb.StartInstanceRequest{})
	params := start.Fields().ByName("params").Message()
	entry := field(field(nil, params, "key", []byte("k")), params, "value", bad)
	req := field(field(nil, start, "id", []byte("i")), start, "params", entry)
	err = invokeRaw(env.conn, pb.InstanceService_StartInstance_FullMethodName, req)
	wantViolation(t, err, "params.value")

	// A field whose length runs past the end of the message.
	err = invokeRaw(env.conn, pb.InstanceService_GetInstance_FullMethodName, []byte{0x0a, 0x40, 'x'})
	if st := wantCode(t, err, codes.InvalidArgument); !strings.Contains(st.Message(), "dfsmr.v1.GetInstanceRequest") {
		t.Fatalf("truncated request: %v; want the message type named", err)
	}

	// Streams check every message they receive.
	req2 := field(nil, desc(&pb.ChangesRequest{}), "machine", bad)
	st, err := env.conn.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true}, pb.ChangesService_Changes_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(&req2); err != nil {
		t.Fatal(err)
	}
	st.CloseSend()
	var resp []byte
	wantViolation(t, st.RecvMsg(&resp), "machine")

	// The server is none the worse.
	if _, err := env.machines.ListMachines(context.Background(), &pb.ListMachinesRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestOversizedRequests(t *testing.T) {
	env := mustServer(t, server.Config{})
	ctx := context.Background()

	_, err := env.machines.DefineMachine(ctx, &pb.DefineMachineRequest{Source: strings.Repeat("#", 10<<20)})
	if st := wantCode(t, err, codes.ResourceExhausted); !strings.Contains(st.Message(), fmt.Sprint(server.DefaultMaxRecvMsgBytes)) {
		t.Fatalf("10 MB message: %v; want the limit named", err)
	}

	many := map[string]string{}
	for i := range engine.MaxParams + 1 {
		many[fmt.Sprint("k", i)] = "v"
	}
	_, err = env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "i", Machine: "report", Params: many})
	wantViolation(t, err, "params")

	_, err = env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "i", Machine: "report", Params: map[string]string{"k": strings.Repeat("v", 1<<20)}})
	wantViolation(t, err, `params["k"]`)

	_, err = env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: strings.Repeat("i", 1<<20), Machine: "report"})
	wantViolation(t, err, "id")

	_, err = env.machines.DefineMachine(ctx, &pb.DefineMachineRequest{Source: "id: deep\nnodes: " + strings.Repeat("[", 100_000)})
	if st := wantCode(t, err, codes.InvalidArgument); !strings.Contains(st.Message(), "depth") {
		t.Fatalf("deeply nested YAML: %v; want the depth limit named", err)
	}
}

func TestInstanceParamsBounded(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	ctx := context.Background()
	define(t, env, orderYAML)
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "o", Machine: "order"}); err != nil {
		t.Fatal(err)
	}
	// Each signal adds MaxParams new params; the instance keeps them all
	// until one more would pass MaxInstanceParams.
	signals := []string{"hold", "release"}
	for i := 0; ; i++ {
		params := map[string]string{}
		for j := range engine.MaxParams {
			params[fmt.Sprintf("s%d-%d", i, j)] = "v"
		}
		_, err := env.instances.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: "o", Signal: signals[i%2], Params: params})
		if (i+1)*engine.MaxParams <= engine.MaxInstanceParams {
			if err != nil {
				t.Fatalf("signal %d: %v", i, err)
			}
			continue
		}
		wantViolation(t, err, "params")
		break
	}
	got, err := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "o"})
	if err != nil || len(got.GetInstance().GetParams()) != engine.MaxInstanceParams {
		t.Fatalf("instance after the refused signal: %d params, %v", len(got.GetInstance().GetParams()), err)
	}
}

func TestRateLimitPerPrincipal(t *testing.T) {
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := mustSecure(t, false, func(c *server.Config) {
		c.Clock = fake
		c.RateLimit = 1
		c.RateBurst = 3
	})
	ctx := context.Background()
	root := pb.NewMachineServiceClient(s.dial(t, s.token["root"], tlstest.Pair{}))
	for i := range 3 {
		if _, err := root.ListMachines(ctx, &pb.ListMachinesRequest{}); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	_, err := root.ListMachines(ctx, &pb.ListMachinesRequest{})
	if st := wantCode(t, err, codes.ResourceExhausted); !strings.Contains(st.Message(), "principal:root") || !strings.Contains(st.Message(), "rate_limit") {
		t.Fatalf("over the limit: %v; want the client and the limit named", err)
	}
	// Another principal has a bucket of its own, even on the same address.
	viewer := pb.NewMachineServiceClient(s.dial(t, s.token["viewer"], tlstest.Pair{}))
	if _, err := viewer.ListMachines(ctx, &pb.ListMachinesRequest{}); err != nil {
		t.Fatalf("another principal: %v", err)
	}
	fake.Advance(time.Second)
	if _, err := root.ListMachines(ctx, &pb.ListMachinesRequest{}); err != nil {
		t.Fatalf("a second later: %v", err)
	}
}

func TestStreamsPerClientBounded(t *testing.T) {
	env := mustServer(t, server.Config{MaxStreamsPerClient: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func() (context.CancelFunc, error) {
		sctx, scancel := context.WithCancel(ctx)
		st, err := env.changes.Changes(sctx, &pb.ChangesRequest{})
		if err != nil {
			scancel()
			return nil, err
		}
		// The head-sequence header means the handler registered the
		// stream; without it, the server ended the stream at once.
		md, err := st.Header()
		if err == nil && len(md.Get(client.HeadSeqHeader)) == 0 {
			_, err = st.Recv()
		}
		if err == nil {
			return scancel, nil
		}
		scancel()
		return nil, err
	}
	first, err := open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(); err != nil {
		t.Fatal(err)
	}
	_, err = open()
	if st := wantCode(t, err, codes.ResourceExhausted); !strings.Contains(st.Message(), "max_streams_per_client") {
		t.Fatalf("third stream: %v; want the limit named", err)
	}
	first()
	// The slot frees once the server has ended the first stream.
	for {
		_, err := open()
		if err == nil {
			break
		}
		wantCode(t, err, codes.ResourceExhausted)
		runtime.Gosched()
	}
}

// TestMemoryBoundedUnderOversizedRequests sends a burst of requests at or
// past the limits from 4 clients at once and checks that the server holds
// none of them afterwards. It logs the heap figures.
func TestMemoryBoundedUnderOversizedRequests(t *testing.T) {
	env := mustServer(t, server.Config{})
	ctx := context.Background()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC() // a second cycle empties the pools' victim caches
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	huge := strings.Repeat("#", 10<<20)
	nearLimit := strings.Repeat("v", server.DefaultMaxRecvMsgBytes-1024)
	var peak uint64
	var wg sync.WaitGroup
	var mu sync.Mutex
	const clients, each = 4, 4
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				_, err := env.machines.DefineMachine(ctx, &pb.DefineMachineRequest{Source: huge})
				if status.Code(err) != codes.ResourceExhausted {
					t.Errorf("10 MB define: %v", err)
				}
				_, err = env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprint(w, "-", i), Machine: "report", Params: map[string]string{"k": nearLimit}})
				if status.Code(err) != codes.InvalidArgument {
					t.Errorf("4 MB param: %v", err)
				}
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				mu.Lock()
				peak = max(peak, ms.HeapInuse)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	after := heap()
	const sent = clients * each * (10<<20 + server.DefaultMaxRecvMsgBytes)
	t.Logf("heap in use: before %d KiB, peak %d KiB, after %d KiB; %d MiB sent", before>>10, peak>>10, after>>10, sent>>20)
	// The requests total over 200 MiB; the client's copies and the
	// server's buffers are garbage once the calls end.
	if after > before+64<<20 {
		t.Fatalf("heap grew by %d MiB after the burst", (after-before)>>20)
	}
}

func TestHistoryBounded(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true, MaxHistory: 3})
	ctx := context.Background()
	define(t, env, orderYAML)
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "o", Machine: "order"}); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []string{"hold", "release", "hold", "release"} {
		if _, err := env.instances.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: "o", Signal: sig}); err != nil {
			t.Fatal(err)
		}
	}
	// max_history is the largest page: a larger history_page_size is cut
	// to it, and the rest comes on the next page.
	req := &pb.GetInstanceRequest{Id: "o", IncludeHistory: true, HistoryPageSize: 10}
	var pages [][]string
	for {
		got, err := env.instances.GetInstance(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range got.GetInstance().GetHistory() {
			names = append(names, c.GetKind().String()+":"+c.GetTransition())
		}
		pages = append(pages, names)
		if req.HistoryPageToken = got.GetNextHistoryPageToken(); req.HistoryPageToken == "" {
			break
		}
	}
	want := [][]string{
		{"CHANGE_KIND_STARTED:", "CHANGE_KIND_SIGNALED:hold", "CHANGE_KIND_SIGNALED:release"},
		{"CHANGE_KIND_SIGNALED:hold", "CHANGE_KIND_SIGNALED:release"},
	}
	if fmt.Sprint(pages) != fmt.Sprint(want) {
		t.Fatalf("history pages = %v, want %v", pages, want)
	}
	_, err := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "o", IncludeHistory: true, HistoryPageSize: -1})
	wantViolation(t, err, "history_page_size")
	// The changelog keeps every change.
	st, err := env.changes.Changes(ctx, &pb.ChangesRequest{FromSeq: 1, Instance: "o", StopAtHead: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 5 {
		t.Fatalf("changelog of o: %d changes, want 5", n)
	}
}

// TestConcurrentStreamsPerConnectionBounded holds the only stream a
// connection may have open: another call on it waits for the stream to
// end, while another connection is served at once.
func TestConcurrentStreamsPerConnectionBounded(t *testing.T) {
	env := mustServer(t, server.Config{MaxConcurrentStreams: 1})
	ctx, cancel := context.WithCancel(context.Background())
	st, err := env.changes.Changes(ctx, &pb.ChangesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Header(); err != nil {
		t.Fatal(err)
	}
	// The call cannot start before the deadline, however long it is;
	// without the bound it would return at once.
	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	_, err = env.machines.ListMachines(short, &pb.ListMachinesRequest{})
	wantCode(t, err, codes.DeadlineExceeded)

	other := mustServerConn(t, env)
	if _, err := pb.NewMachineServiceClient(other).ListMachines(context.Background(), &pb.ListMachinesRequest{}); err != nil {
		t.Fatalf("another connection: %v", err)
	}
	cancel()
	if _, err := env.machines.ListMachines(context.Background(), &pb.ListMachinesRequest{}); err != nil {
		t.Fatalf("once the stream ended: %v", err)
	}
}

func mustServerConn(t *testing.T, env *testEnv) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(env.srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
