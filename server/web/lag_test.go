package web_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/changes"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store/bolt"
	"github.com/dfsmr/dfsmr/server/web"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestLaggingStreamEndsAndResumesWithoutGap: with a hub buffer of one
// change, a commit of five changes overflows a live stream's queue; the
// hub ends it, the response ends, and a browser reconnecting with the last
// id it saw gets all five, in order.
func TestLaggingStreamEndsAndResumesWithoutGap(t *testing.T) {
	var hook atomic.Pointer[func([]fsm.Change)]
	st, err := bolt.Open(filepath.Join(t.TempDir(), "dfsmr.db"), bolt.Options{CommitHook: func(c []fsm.Change) {
		if f := hook.Load(); f != nil {
			(*f)(c)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(tlogWriter{t}, nil))
	hub := changes.New(st, changes.Options{Buffer: 1, Logger: log})
	defer hub.Close()
	eng := engine.New(st, engine.Options{Logger: log})
	publish := func(c []fsm.Change) { hub.Publish(c); eng.OnCommit(c) }
	hook.Store(&publish)
	ctx := context.Background()
	if err := eng.Lead(ctx); err != nil {
		t.Fatal(err)
	}
	defer eng.Follow(ctx)
	for _, src := range machines.Bundled() {
		if _, _, err := eng.DefineMachine(ctx, src.File, src.Data, "test"); err != nil {
			t.Fatal(err)
		}
	}
	h, err := web.New(web.Options{Engine: eng, Hub: hub, Logger: log, Status: func(err error) *status.Status { return status.New(codes.Internal, err.Error()) }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Close()
	e := &env{}
	b := e.browser(t)
	b.base = srv.URL
	b.get("/instances")

	start := func(id string) {
		if _, _, err := eng.StartInstance(ctx, engine.StartArgs{ID: id, Machine: "crawler", Actor: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < 5; i++ {
		start(fmt.Sprintf("c-%d", i))
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp := b.stream(sctx, fmt.Sprintf("/events?machine=crawler&after=%d", hub.Head()), "")
	defer resp.Body.Close()
	events := bufio.NewReader(resp.Body)
	// One change fits the buffer: once its event came, the stream is
	// live.
	start("c-0")
	last := readEvents(t, events, 1)[0].id
	// Five cancels in one transaction: more than the buffer at once.
	res, err := eng.CancelInstances(ctx, engine.BulkArgs{Machine: "crawler", Actor: "test"})
	if err != nil || res.Changed != 5 {
		t.Fatalf("cancel: %+v %v", res, err)
	}
	if _, err := io.Copy(io.Discard, events); err != nil {
		t.Fatalf("the lagging stream did not end cleanly: %v", err)
	}
	if hub.Lagged() != 1 {
		t.Fatalf("streams ended for lagging: %d, want 1", hub.Lagged())
	}
	// The browser reconnects with the last id it saw.
	resp2 := b.stream(sctx, "/events?machine=crawler", last)
	defer resp2.Body.Close()
	got := readEvents(t, bufio.NewReader(resp2.Body), 5)
	for i, ev := range got {
		if !strings.Contains(ev.data, `"kind":"CANCELED"`) || !strings.Contains(ev.data, fmt.Sprintf(`"instance":"c-%d"`, i)) {
			t.Errorf("resumed event %d: %+v", i, ev)
		}
	}
}
