package web_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

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
