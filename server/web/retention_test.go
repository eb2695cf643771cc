package web_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/engine"
)

// TestMachineRatesAfterRetention: once retention deleted the first
// changes, a machine's page still shows the rates of its edges from the
// changes kept.
func TestMachineRatesAfterRetention(t *testing.T) {
	e := mustServer(t, false, func(c *server.Config) { c.ChangelogRetentionCount = 6 })
	ctx := context.Background()
	eng := e.srv.Engine()
	for i := range 3 {
		e.start(t, "report", fmt.Sprint("r-", i), nil)
	}
	for range 3 {
		in, ok, err := eng.Ready(ctx, engine.ReadyArgs{Worker: "w", Machine: "report"})
		if err != nil || !ok {
			t.Fatalf("ready: %v, %v", ok, err)
		}
		if _, err := eng.Transition(ctx, engine.TransitionArgs{ID: in.ID, Token: in.Lease.Token, Transition: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := eng.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	code, body := e.browser(t).get("/machines/report")
	if code != http.StatusOK {
		t.Fatalf("GET /machines/report: %d\n%s", code, body)
	}
	if !strings.Contains(body, "/min") {
		t.Fatalf("no edge rate on the page after retention:\n%s", body)
	}
}

// TestEventsTailAfterRetention: a tail reaching back past the changes
// retention kept starts at the oldest one kept, instead of ending with
// out-of-range.
func TestEventsTailAfterRetention(t *testing.T) {
	e := mustServer(t, false, func(c *server.Config) { c.ChangelogRetentionCount = 3 })
	for i := range 5 {
		e.start(t, "crawler", fmt.Sprint("c-", i), nil)
	}
	if _, err := e.srv.Engine().Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := e.browser(t)
	b.get("/instances") // the anonymous session cookie
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := b.stream(ctx, "/events?machine=crawler&tail=10", "")
	defer resp.Body.Close()
	evs := readEvents(t, bufio.NewReader(resp.Body), 3)
	for i, ev := range evs {
		if want := fmt.Sprintf(`"instance":"c-%d"`, i+2); !strings.Contains(ev.data, want) {
			t.Errorf("event %d: %+v, want %s", i, ev, want)
		}
	}
}
