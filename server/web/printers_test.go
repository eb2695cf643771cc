package web_test

import (
	"bufio"
	"context"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	"github.com/dfsmr/dfsmr/internal/printersim"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"google.golang.org/grpc"
)

// runPrinter connects a simulated printer that prints every part in
// printTime, until the test ends.
func (e *env) runPrinter(tb testing.TB, id string, printTime time.Duration) {
	tb.Helper()
	var opts []grpc.DialOption
	if tok := e.tokens[id]; tok != "" {
		opts = append(opts, client.WithLoopbackToken(tok)...)
	}
	c, err := client.Dial(e.srv.Addr(), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p := printersim.NewPrinter(id, printersim.Profile{PrintTime: printTime, PrintJitter: -1}, rand.New(rand.NewPCG(1, 2)))
		if err := printersim.Run(ctx, printersim.Link{Client: c}, p, rand.New(rand.NewPCG(3, 4))); err != nil {
			tb.Error(err)
		}
	}()
	tb.Cleanup(func() {
		cancel()
		wg.Wait()
		c.Close()
	})
}

// TestPrinterWallRetrieval: a finished print shows as "needs retrieval"
// with the retrieval action; confirming it bad signals retrieved and queues
// a reprint on the same printer; confirming the reprint good lets the
// printer take the next job.
func TestPrinterWallRetrieval(t *testing.T) {
	e := mustServer(t, true, nil)
	o := e.login(t, "olga")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.runPrinter(t, "p1", 20*time.Millisecond)
	// Every change from here on, whatever it is, so nothing is missed
	// between the order and the wait.
	resp := o.stream(ctx, "/events?machine=print_job&tail=0", "")
	defer resp.Body.Close()
	events := bufio.NewReader(resp.Body)
	next := func(want ...string) sseEvent {
		t.Helper()
		for {
			ev := readEvents(t, events, 1)[0]
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(ev.data, w)
			}
			if ok {
				return ev
			}
		}
	}
	online := o.stream(ctx, "/events?device=p1&kind=DEVICE_ONLINE&tail=1000", "")
	readEvents(t, bufio.NewReader(online.Body), 1)
	online.Body.Close()
	if _, _, err := e.srv.Engine().SubmitOrder(ctx, engine.OrderArgs{ID: "o1", Model: "gear", Quantity: 1, Printer: "p1", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	next(`"instance":"o1-1"`, `"to":"awaiting_retrieval"`)
	code, body := o.get("/printers")
	if code != http.StatusOK {
		t.Fatalf("printers: %d", code)
	}
	mustContain(t, "wall", body, `data-printer="p1" data-state="needs retrieval"`, "Confirm retrieval…")

	csrf := o.csrf("/confirm?action=retrieved&id=o1-1&back=/printers")
	if code, body, loc := o.post("/act", url.Values{"csrf": {csrf}, "action": {"retrieved"}, "id": {"o1-1"}, "quality": {"bad"}, "back": {"/printers"}}); code != http.StatusSeeOther || loc != "/printers" {
		t.Fatalf("retrieved bad: %d to %q\n%s", code, loc, body)
	}
	if in := e.instance(t, "o1-1"); in.Params["quality"] != "bad" {
		t.Errorf("o1-1 after bad retrieval: %+v", in)
	}
	reprint := e.instance(t, "reprint-o1-1-1")
	if reprint.Params[engine.JobParamDevice] != "p1" || reprint.Params[engine.JobParamModel] != "gear" {
		t.Fatalf("reprint: %+v", reprint)
	}
	next(`"instance":"reprint-o1-1-1"`, `"to":"awaiting_retrieval"`)
	if code, body, _ := o.post("/act", url.Values{"csrf": {csrf}, "action": {"retrieved"}, "id": {"reprint-o1-1-1"}, "quality": {"good"}}); code != http.StatusSeeOther {
		t.Fatalf("retrieved good: %d\n%s", code, body)
	}
	next(`"instance":"reprint-o1-1-1"`, `"to":"done"`)
	if in := e.instance(t, "o1-1"); in.Status != fsm.StatusFinal {
		t.Errorf("o1-1: %s %s", in.Node, in.Status)
	}
	// A quality that is neither is refused, naming the field.
	if code, body, _ := o.post("/act", url.Values{"csrf": {csrf}, "action": {"retrieved"}, "id": {"o1-1"}, "quality": {"meh"}}); code != http.StatusBadRequest || !strings.Contains(body, "quality") {
		t.Errorf("quality meh: %d\n%s", code, body)
	}
}
