package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dfsmr/dfsmr/server/metrics"
)

// panicky is a gRPC service whose EmptyCall panics and whose UnaryCall
// fails with NOT_FOUND: the server's interceptors must log both.
type panicky struct {
	testgrpc.UnimplementedTestServiceServer
}

func (panicky) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	var m map[string]int
	m["boom"]++ // a nil map write: a real runtime panic
	return &testgrpc.Empty{}, nil
}

func (panicky) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return nil, status.Error(codes.NotFound, "nothing here")
}

// syncBuffer collects JSON log lines from the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// TestRPCLogsAndPanics runs the server's interceptor chain on a real gRPC
// server: every call is logged once with a fresh request id (also sent
// back in the x-request-id header), its method, code and duration; the
// caller's own x-request-id is kept beside it as a label; a panic becomes
// INTERNAL, is logged with its stack under the same request id, and the
// server keeps serving.
func TestRPCLogsAndPanics(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := metrics.New(metrics.Sources{})
	cfg := Config{Logger: log}.WithDefaults()
	g, err := newGuard(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(serverOptions(cfg, g, m)...)
	testgrpc.RegisterTestServiceServer(srv, panicky{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := testgrpc.NewTestServiceClient(conn)

	ctx := metadata.AppendToOutgoingContext(t.Context(), RequestIDHeader, "trace-42")
	var h1, h2 metadata.MD
	_, err = client.EmptyCall(ctx, &testgrpc.Empty{}, grpc.Header(&h1))
	if status.Code(err) != codes.Internal {
		t.Fatalf("panicking call: %v, want INTERNAL", err)
	}
	// A spoofed, oversized or binary client id is not logged.
	bad := metadata.AppendToOutgoingContext(t.Context(), RequestIDHeader, strings.Repeat("x", 65))
	_, err = client.UnaryCall(bad, &testgrpc.SimpleRequest{}, grpc.Header(&h2))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("second call: %v, want NOT_FOUND (the server survived the panic)", err)
	}
	srv.GracefulStop()

	id1, id2 := first(h1.Get(RequestIDHeader)), first(h2.Get(RequestIDHeader))
	if id1 == "" || id2 == "" || id1 == id2 || id1 == "trace-42" {
		t.Fatalf("request ids in headers: %q and %q, want two fresh ones", id1, id2)
	}
	var panicLine, finished map[string]any
	for _, l := range logs.lines(t) {
		switch {
		case l["msg"] == "panic in handler":
			panicLine = l
		case l["grpc.method"] == "UnaryCall":
			finished = l
		}
	}
	if panicLine == nil || panicLine[logKeyRequestID] != id1 || panicLine[logKeyMethod] != "/grpc.testing.TestService/EmptyCall" ||
		!strings.Contains(panicLine[logKeyStack].(string), "panicky.EmptyCall") || panicLine["level"] != "ERROR" ||
		panicLine[logKeyClientRequestID] != "trace-42" {
		t.Errorf("panic log line: %v", panicLine)
	}
	if finished == nil || finished[logKeyRequestID] != id2 || finished["grpc.code"] != "NotFound" ||
		finished["grpc.time_ms"] == nil || finished["level"] != "INFO" {
		t.Errorf("finished-call log line: %v", finished)
	}
	if _, ok := finished[logKeyClientRequestID]; ok {
		t.Errorf("an oversized client request id was logged: %v", finished)
	}
	rec := httptest.NewRecorder()
	m.Handler(false).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "\ndfsmr_grpc_panics_total 1\n") {
		t.Errorf("panic not counted in the metrics")
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
