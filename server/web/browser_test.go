//go:build browser

package web_test

// TestBrowser drives the dashboard in a real browser: Debian's chromium,
// through playwright-core (server/web/e2e). It needs node, chromium and
// the e2e directory's npm packages, so it builds only with the browser tag:
//
//	server/web/e2e/run.sh     # installs what is missing, then runs it
//	go test -tags browser -run TestBrowser ./server/web/

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	"github.com/dfsmr/dfsmr/internal/printersim"
	"github.com/dfsmr/dfsmr/internal/reportapi"
	"github.com/dfsmr/dfsmr/internal/reportdemo"
	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/auth"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// freeAddr returns a loopback address with a port free now, so that a
// restarted server listens where the browser and the printers expect it.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestBrowser(t *testing.T) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is needed: run server/web/e2e/run.sh")
	}
	chromium := os.Getenv("DFSMR_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	// The screenshots go to docs/screenshots unless DFSMR_SCREENSHOTS
	// names another directory (a CI run that must not touch the tree).
	shots, err := filepath.Abs(filepath.Join("..", "..", "docs", "screenshots"))
	if err != nil {
		t.Fatal(err)
	}
	if d := os.Getenv("DFSMR_SCREENSHOTS"); d != "" {
		shots = d
	}
	dir := t.TempDir()
	tokens := map[string]string{}
	var tf strings.Builder
	tf.WriteString("principals:\n")
	for _, p := range []struct {
		name  string
		roles string
	}{{"olga", "operator"}, {"rita", "reader"}, {"report-demo", "operator, worker"}, {"crawler-worker-7", "worker"},
		{"p1", "device"}, {"p2", "device"}, {"p3", "device"}, {"p4", "device"}} {
		tokens[p.name] = auth.NewToken()
		fmt.Fprintf(&tf, "  - name: %s\n    roles: [%s]\n    token_sha256: %s\n", p.name, p.roles, auth.HashToken(tokens[p.name]))
	}
	cfg := server.Config{
		DB:       filepath.Join(dir, "dfsmr.db"),
		Addr:     freeAddr(t),
		HTTPAddr: freeAddr(t),
		Tokens:   filepath.Join(dir, "tokens.yaml"),
		Logger:   slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if err := os.WriteFile(cfg.Tokens, []byte(tf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var srvMu sync.Mutex
	var srv *server.Server
	start := func() {
		s, err := server.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx, nil); err != nil {
			t.Fatal(err)
		}
		srvMu.Lock()
		srv = s
		srvMu.Unlock()
	}
	eng := func() *engine.Engine {
		srvMu.Lock()
		defer srvMu.Unlock()
		return srv.Engine()
	}
	start()
	defer func() {
		if err := srv.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	}()

	dial := func(name string) *client.Client {
		c, err := client.Dial(cfg.Addr, client.WithLoopbackToken(tokens[name])...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	// The printer simulator: p1 prints one part in 2 s and tells the test
	// when it finished; the others print for a while, fail now and then,
	// and an operator tends them.
	finished := make(chan string, 16)
	connected := make(chan string, 64)
	for i, id := range []string{"p1", "p2", "p3", "p4"} {
		prof := printersim.Profile{PrintTime: 12 * time.Second, FailRate: 0.25}
		link := printersim.Link{Client: dial(id), Pool: "lab", ReportEvery: time.Second}
		link.OnEvent = func(ev printersim.Event) {
			switch {
			case ev.Kind == printersim.EventConnected:
				select {
				case connected <- ev.Printer:
				default:
				}
			case ev.Kind == printersim.EventFinished && ev.Printer == "p1":
				finished <- ev.Job
			}
		}
		if id == "p1" {
			prof = printersim.Profile{PrintTime: 2 * time.Second, PrintJitter: -1}
			link.Pool = "desk"
		}
		p := printersim.NewPrinter(id, prof, rand.New(rand.NewPCG(uint64(i), 7)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			printersim.Run(ctx, link, p, rand.New(rand.NewPCG(uint64(i), 8)))
		}()
	}
	op := &printersim.Operator{Client: dial("olga"), Delay: 8 * time.Second, Devices: map[string]bool{"p2": true, "p3": true, "p4": true}}
	wg.Add(1)
	go func() {
		defer wg.Done()
		op.Run(ctx)
	}()
	for online := map[string]bool{}; len(online) < 4; {
		select {
		case id := <-connected:
			online[id] = true
		case <-ctx.Done():
			t.Fatal("the printers never came online")
		}
	}
	if _, _, err := eng().SubmitOrder(ctx, engine.OrderArgs{ID: "lab-gears", Model: "gear", Quantity: 9, Pool: "lab", Actor: "olga"}); err != nil {
		t.Fatal(err)
	}

	// The report demo, against the same server.
	wg.Add(1)
	go func() {
		defer wg.Done()
		reportdemo.Run(ctx, reportdemo.Config{Addr: cfg.Addr, Items: 300, Workers: 3,
			API:         reportapi.Options{Latency: 300 * time.Millisecond, FailureRate: 0.15},
			DialOptions: client.WithLoopbackToken(tokens["report-demo"])})
	}()

	// Two crawler leases for the leases page, which go stuck after 15 s
	// without heartbeats; then the instances the bulk cancel counts (the
	// browser cancels them before the leases time out and come back).
	for _, id := range []string{"crawl-example-org", "crawl-example-net"} {
		if _, _, err := eng().StartInstance(ctx, engine.StartArgs{ID: id, Machine: "crawler", Params: map[string]string{"url": "https://" + strings.TrimPrefix(id, "crawl-")}, Actor: "olga"}); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := eng().Ready(ctx, engine.ReadyArgs{Machine: "crawler", Worker: "crawler-worker-7", Principal: "crawler-worker-7"}); err != nil || !ok {
			t.Fatalf("lease: %v %v", ok, err)
		}
	}
	const bulkN = 7
	for i := range bulkN {
		if _, _, err := eng().StartInstance(ctx, engine.StartArgs{ID: fmt.Sprintf("bulk-%02d", i), Machine: "crawler", Actor: "olga"}); err != nil {
			t.Fatal(err)
		}
	}

	cmd := exec.CommandContext(ctx, nodeBin, "dashboard.mjs")
	cmd.Dir = "e2e"
	cmd.Env = append(os.Environ(),
		"DFSMR_URL=http://"+cfg.HTTPAddr,
		"DFSMR_OPERATOR_TOKEN="+tokens["olga"],
		"DFSMR_READER_TOKEN="+tokens["rita"],
		"DFSMR_CHROMIUM="+chromium,
		"DFSMR_SCREENSHOTS="+shots,
		"DFSMR_BULK_N="+fmt.Sprint(bulkN),
	)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = tlogWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reply := func(s string) { io.WriteString(stdin, s+"\n") }
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		cmdName, arg, _ := strings.Cut(strings.TrimPrefix(line, "CMD "), " ")
		if !strings.HasPrefix(line, "CMD ") {
			t.Log("e2e: " + line)
			continue
		}
		switch cmdName {
		case "order-p1":
			// Two parts on p1; answer once the first finished on the
			// printer, so the browser can time the wall's update.
			if _, _, err := eng().SubmitOrder(ctx, engine.OrderArgs{ID: "desk-bracket", Model: "bracket", Quantity: 2, Printer: "p1", Actor: "olga"}); err != nil {
				t.Fatal(err)
			}
			select {
			case job := <-finished:
				reply("finished " + job)
			case <-ctx.Done():
				t.Fatal("p1 never finished its print")
			}
		case "check-bulk":
			var aborted, other []string
			err := eng().ListInstances(ctx, store.InstanceFilter{Machine: "crawler"}, "", func(in fsm.Instance) bool {
				switch {
				case strings.HasPrefix(in.ID, "bulk-") && in.Node == fsm.NodeAborted:
					aborted = append(aborted, in.ID)
				case in.Node == fsm.NodeAborted:
					other = append(other, in.ID)
				}
				return true
			})
			if err != nil || fmt.Sprint(len(aborted)) != arg || len(other) > 0 {
				reply(fmt.Sprintf("fail: %d bulk instances cancelled (%v), want %s; others cancelled: %v; %v", len(aborted), aborted, arg, other, err))
				continue
			}
			reply("ok")
		case "restart":
			srvMu.Lock()
			s := srv
			srvMu.Unlock()
			if err := s.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			start()
			for i := range 3 {
				if _, _, err := eng().StartInstance(ctx, engine.StartArgs{ID: fmt.Sprintf("after-restart-%d", i), Machine: "crawler", Actor: "olga"}); err != nil {
					t.Fatal(err)
				}
			}
			reply("ok")
		case "changes":
			for i := range 5 {
				if _, _, err := eng().StartInstance(ctx, engine.StartArgs{ID: fmt.Sprintf("while-paused-%d", i), Machine: "crawler", Actor: "olga"}); err != nil {
					t.Fatal(err)
				}
			}
			reply("ok")
		default:
			t.Fatalf("e2e asked for %q", line)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("e2e script: %v", err)
	}
}
