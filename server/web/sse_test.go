package web_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server"
)

// TestEventStreams200BoundedMemory holds 200 browsers' worth of event
// streams open on a real server, commits changes, checks that every
// stream delivers all of them, and measures the heap the open streams
// take (server and this test's sockets together). Run with -v to see it.
func TestEventStreams200BoundedMemory(t *testing.T) {
	const conns = 200
	e := mustServer(t, false, nil)
	b := e.browser(t)
	b.get("/instances") // the session cookie
	u := b.c.Jar.Cookies(mustURL(t, e.base+"/"))[0]
	cookie := u.Name + "=" + u.Value

	before := heapInUse()
	gBefore := runtime.NumGoroutine()
	type stream struct {
		c net.Conn
		r *bufio.Reader
	}
	streams := make([]stream, conns)
	for i := range streams {
		c, err := net.Dial("tcp", e.srv.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /events?machine=crawler HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nCookie: %s\r\n\r\n", cookie)
		r := bufio.NewReaderSize(c, 512)
		resp, err := http.ReadResponse(r, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %v %v", i, resp, err)
		}
		streams[i] = stream{c, bufio.NewReaderSize(resp.Body, 512)}
	}
	// Every stream is registered with the hub once its first line came.
	for i, s := range streams {
		if line, err := s.r.ReadString('\n'); err != nil || !strings.HasPrefix(line, ": dfsmr changelog") {
			t.Fatalf("stream %d: %q %v", i, line, err)
		}
	}
	open := heapInUse()
	gOpen := runtime.NumGoroutine()
	per := (int64(open) - int64(before)) / conns
	t.Logf("%d open event streams: heap and stacks in use %d KiB -> %d KiB, %d B per stream; goroutines %d -> %d (%.1f per stream)",
		conns, before>>10, open>>10, per, gBefore, gOpen, float64(gOpen-gBefore)/conns)
	if per > 64<<10 {
		t.Errorf("an open event stream takes %d B of heap and stacks, want under 64 KiB", per)
	}

	const n = 50
	for i := range n {
		e.start(t, "crawler", fmt.Sprintf("c-%02d", i), nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, s := range streams {
		dl, _ := ctx.Deadline()
		s.c.SetReadDeadline(dl)
		got := 0
		for got < n {
			line, err := s.r.ReadString('\n')
			if err != nil {
				t.Fatalf("stream %d after %d events: %v", i, got, err)
			}
			if strings.HasPrefix(line, "data: ") {
				if want := fmt.Sprintf(`"instance":"c-%02d"`, got); !strings.Contains(line, want) {
					t.Fatalf("stream %d event %d: %s, want %s", i, got, line, want)
				}
				got++
			}
		}
	}
	busy := heapInUse()
	t.Logf("after %d changes to each of %d streams: heap and stacks in use %d KiB", n, conns, busy>>10)
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// TestStopEndsEventStreams: event streams never end on their own, so the
// server's Stop ends them instead of waiting its StopTimeout out.
func TestStopEndsEventStreams(t *testing.T) {
	e := mustServer(t, false, func(c *server.Config) { c.StopTimeout = time.Minute })
	b := e.browser(t)
	b.get("/instances")
	resp := b.stream(context.Background(), "/events", "")
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, ": dfsmr changelog") {
		t.Fatalf("first line %q: %v", line, err)
	}
	begin := time.Now()
	if err := e.srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 10*time.Second {
		t.Fatalf("Stop took %v with an event stream open", took)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatalf("the stream did not end cleanly: %v", err)
	}
}
