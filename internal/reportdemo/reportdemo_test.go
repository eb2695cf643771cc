package reportdemo_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	"github.com/dfsmr/dfsmr/client/backoff"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/reportapi"
	"github.com/dfsmr/dfsmr/internal/reportdemo"
	"github.com/dfsmr/dfsmr/server"
)

// fastReportYAML is the bundled report machine with short retry delays,
// so that a run with many failures stays fast.
const fastReportYAML = `id: report_fast
nodes:
  downloadable:
    start: true
    timeout: 30s
    retry: &retry {max_attempts: 8, backoff: exponential, initial: 5ms, max: 100ms, jitter: 0.2}
    transitions:
      ok: uploadable
      error: downloadable
      throttled: {to: downloadable, delay: 30s}
      give_up: failed
  uploadable:
    timeout: 30s
    retry: *retry
    transitions:
      ok: completed
      error: uploadable
      throttled: {to: uploadable, delay: 30s}
      give_up: failed
  completed: {final: true}
  failed: {final: true}
`

func TestTransform(t *testing.T) {
	src := "day,client,campaign,impressions,clicks,cost,currency,watch_ms\n" +
		"2026-01-01,acme,a,10,2,845.20,USD,5230114\n" +
		"2026-01-01,kaizen,b,10,2,182300,JPY,999\n" +
		"2026-01-01,bergmann,c,10,2,0.01,EUR,0\n"
	got, err := reportdemo.Transform([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := "day,client,campaign,impressions,clicks,cost_eur,watch_seconds\n" +
		"2026-01-01,acme,a,10,2,777.58,5230.114\n" + // 845.20 * 0.92 = 777.584
		"2026-01-01,kaizen,b,10,2,1112.03,0.999\n" + // 182300 * 0.0061 = 1112.03
		"2026-01-01,bergmann,c,10,2,0.01,0.000\n"
	if string(got) != want {
		t.Fatalf("Transform =\n%s\nwant\n%s", got, want)
	}
	for _, bad := range []string{
		"day,client,campaign,impressions,clicks,cost,currency,watch_ms\n2026-01-01,a,b,1,1,1.00,XXX,1\n",
		"day,client,campaign,impressions,clicks,cost,currency,watch_ms\n2026-01-01,a,b,1,1,1.0.0,USD,1\n",
		"day,client,campaign,impressions,clicks,cost,currency,watch_ms\n2026-01-01,a,b,1,1,1.00,USD,-5\n",
		"day,client,campaign,impressions,clicks,cost,currency\n2026-01-01,a,b,1,1,1.00,USD\n",
	} {
		if _, err := reportdemo.Transform([]byte(bad)); err == nil {
			t.Errorf("Transform accepted %q", bad)
		}
	}
	// Every report the API serves transforms.
	for _, c := range reportapi.Clients() {
		raw, err := reportapi.Report(c, "2026-02-03")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reportdemo.Transform(raw); err != nil {
			t.Errorf("report of %s: %v", c, err)
		}
	}
}

func TestUploader(t *testing.T) {
	u := &reportdemo.Uploader{Dir: t.TempDir()}
	if err := u.Upload("acme/2026-01-01.csv", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := u.Upload("acme/2026-01-01.csv", []byte("a")); err != nil {
		t.Fatalf("identical re-upload: %v", err)
	}
	err := u.Upload("acme/2026-01-01.csv", []byte("b"))
	if _, ok := errors.AsType[*reportdemo.ConflictError](err); !ok {
		t.Fatalf("different content: %v, want a conflict", err)
	}
	// Concurrent uploads of different content: one wins, the others see a
	// conflict, and the object is whole.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = u.Upload("race.csv", bytes.Repeat([]byte{byte('0' + i)}, 1<<16)) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
		} else if _, ok := errors.AsType[*reportdemo.ConflictError](err); !ok {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(u.Dir, "race.csv"))
	if err != nil || won != 1 || len(b) != 1<<16 || bytes.Count(b, b[:1]) != len(b) {
		t.Fatalf("%d uploads won, object of %d bytes (%v)", won, len(b), err)
	}
	if st := u.Stats(); st.Uploads != 2 || st.Repeats != 1 || st.Conflicts != 8 {
		t.Fatalf("stats %+v", st)
	}
	left, _ := filepath.Glob(filepath.Join(u.Dir, ".upload-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestSerial(t *testing.T) {
	api, err := reportapi.Start(reportapi.Options{FailureRate: 0.3, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	u := &reportdemo.Uploader{Dir: t.TempDir()}
	items := reportdemo.Items(20, reportapi.Clients(), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	done, failed, err := reportdemo.Serial(t.Context(), &reportdemo.Downloader{BaseURL: api.URL()}, u, items,
		reportdemo.Retry{MaxAttempts: 20, Backoff: backoff.Policy{Growth: backoff.Exponential, Initial: time.Millisecond, Max: 4 * time.Millisecond}})
	if err != nil || done != 20 || failed != 0 {
		t.Fatalf("Serial = %d done, %d failed, %v", done, failed, err)
	}
	if st := api.Stats(); st.Failed == 0 || st.OK != 20 {
		t.Fatalf("API stats %+v: want failures and 20 successes", st)
	}
	checkUploads(t, u.Dir, items)
}

// checkUploads checks that every item's upload holds exactly its
// transformed report.
func checkUploads(t *testing.T, dir string, items []reportdemo.Item) {
	t.Helper()
	for _, it := range items {
		raw, err := reportapi.Report(it.Client, it.Day)
		if err != nil {
			t.Fatal(err)
		}
		want, err := reportdemo.Transform(raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(it.Key())))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("upload of %s: %v, content differs: %v", it.Key(), err, !bytes.Equal(got, want))
		}
	}
}

// TestPipeline1000Items: a thousand report items (200 with -short, which
// the rate limit would otherwise make last seconds) against an API that fails
// 20% of requests and rate-limits all reach a final node (completed, or
// failed after max attempts); each item's history moves forward only
// (downloadable, then uploadable, then a final node); every upload holds
// its item's report and none was written twice with different content.
func TestPipeline1000Items(t *testing.T) {
	items := 1000
	if testing.Short() {
		items = 200 // the API's rate limit makes 1000 take seconds
	}
	dir := t.TempDir()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(t.Context(), server.Config{DB: filepath.Join(dir, "dfsmr.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context(), lis); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(t.Context())

	var progress strings.Builder
	res, err := reportdemo.Run(t.Context(), reportdemo.Config{
		Addr: srv.Addr(), Dir: dir, Items: items, Workers: 64,
		API: reportapi.Options{
			Latency: time.Millisecond, FailureRate: 0.2, ThrottleRate: 0.05, Seed: 42,
			RateLimit: 300, Burst: 30,
		},
		Machine: "report_fast", MachineSource: fastReportYAML,
		Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", res)
	if res.Completed+res.Failed != items {
		t.Fatalf("%d completed + %d failed, want %d final", res.Completed, res.Failed, items)
	}
	if res.API.Failed == 0 || res.API.Throttled == 0 || res.Retries == 0 || res.Throttles == 0 {
		t.Fatalf("the run saw no failure or no throttling: %+v", res)
	}
	if res.Upload.Conflicts != 0 {
		t.Fatalf("%d uploads of different content", res.Upload.Conflicts)
	}
	if !strings.Contains(progress.String(), fmt.Sprintf("%d/%d completed", res.Completed, items)) {
		t.Fatalf("progress has no final line:\n%s", progress.String())
	}

	c, err := client.Dial(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	order := map[string]int{"downloadable": 0, "uploadable": 1, "completed": 2, "failed": 2, "dfsmr.failed": 2}
	var completed []reportdemo.Item
	for _, it := range reportdemo.Items(items, reportapi.Clients(), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		id := res.Prefix + it.Client + "-" + it.Day
		r, err := c.Instances.GetInstance(t.Context(), &pb.GetInstanceRequest{Id: id, IncludeHistory: true})
		if err != nil {
			t.Fatal(err)
		}
		in := r.GetInstance()
		at, errorsInNode := 0, 0
		for _, ch := range in.GetHistory() {
			to, ok := order[ch.GetToNode()]
			if !ok || to < at {
				t.Fatalf("%s went back from step %d to %q: %v", id, at, ch.GetToNode(), in.GetHistory())
			}
			if to > at {
				errorsInNode = 0
			}
			if ch.GetTransition() == "error" {
				errorsInNode++
			}
			at = to
		}
		switch in.GetNode() {
		case "completed":
			completed = append(completed, it)
		case "dfsmr.failed":
			if errorsInNode < 7 { // the 8th failure is the one that fails it
				t.Fatalf("%s failed after %d errors: %v", id, errorsInNode, in.GetHistory())
			}
		default:
			t.Fatalf("%s ended in %q", id, in.GetNode())
		}
	}
	checkUploads(t, filepath.Join(dir, "uploads"), completed)
}

// TestRunCreatesDir runs a few items with a Dir that does not exist yet:
// Run creates it (the in-process server's file and the uploads land in
// it), and the progress lines carry their labels.
func TestRunCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "demo")
	var progress strings.Builder
	res, err := reportdemo.Run(t.Context(), reportdemo.Config{
		Dir: dir, Items: 3, Workers: 2, Serial: true, Progress: &progress,
		Machine: "report_fast", MachineSource: fastReportYAML,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 3 {
		t.Fatalf("result = %+v", res)
	}
	for _, name := range []string{"dfsmr.db", "uploads"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"dfsmr workers 3/3 completed", "serial loop   3/3 completed"} {
		if !strings.Contains(progress.String(), want) {
			t.Fatalf("progress has no %q:\n%s", want, progress.String())
		}
	}
}
