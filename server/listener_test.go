package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// syncBuffer is a log sink tests read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// dialFrom opens a TCP connection to addr from the loopback address from
// and reports whether the server kept it: an accepted connection gets the
// server's HTTP/2 SETTINGS at once, a refused one is closed (EOF).
func dialFrom(t *testing.T, from, addr string) (net.Conn, bool) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	_, err = c.Read(b[:])
	if err != nil && err != io.EOF && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read from a connection from %s: %v", from, err)
	}
	return c, err == nil
}

// TestConnectionLimits opens connections past max_connections_per_ip and
// max_connections: those over a limit are closed at once, counted by
// limit, and logged at WARN once per interval; a slot comes back when a
// connection closes.
func TestConnectionLimits(t *testing.T) {
	logs := &syncBuffer{}
	env := mustServer(t, server.Config{
		MaxConnections: 3, MaxConnectionsPerIP: 2, MetricsAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	addr := env.srv.Addr()
	// The env's own client connects lazily: it holds no slot yet.
	a1, ok1 := dialFrom(t, "127.0.0.1", addr)
	_, ok2 := dialFrom(t, "127.0.0.1", addr)
	_, ok3 := dialFrom(t, "127.0.0.1", addr)
	_, ok4 := dialFrom(t, "127.0.0.2", addr)
	_, ok5 := dialFrom(t, "127.0.0.3", addr)
	if !ok1 || !ok2 || ok3 || !ok4 || ok5 {
		t.Fatalf("kept: %v %v %v %v %v; want the third from 127.0.0.1 (per IP) and the one from 127.0.0.3 (total) refused", ok1, ok2, ok3, ok4, ok5)
	}
	// A gRPC client on a refused connection fails fast.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pb.NewMachineServiceClient(conn).ListMachines(ctx, &pb.ListMachinesRequest{})
	wantCode(t, err, codes.Unavailable)

	s := mustScrape(t, env)
	if v, _ := s.value("dfsmr_connections_refused_total", "limit=per_ip"); v != 1 {
		t.Errorf("refused per_ip = %v, want 1", v)
	}
	if v, _ := s.value("dfsmr_connections_refused_total", "limit=total"); v < 2 {
		t.Errorf("refused total = %v, want at least 2", v)
	}
	if n := strings.Count(logs.String(), "connection limit reached"); n != 1 {
		t.Errorf("%d log lines about refused connections, want 1 (rate-limited):\n%s", n, logs)
	}

	// Closing a connection frees its slot once the server notices.
	a1.Close()
	for {
		if _, ok := dialFrom(t, "127.0.0.1", addr); ok {
			break
		}
	}
}
