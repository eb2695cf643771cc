package reportdemo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/reportapi"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc"
)

// Defaults of Config.
const (
	DefaultItems   = 500
	DefaultWorkers = 64
	// DefaultMachine is the bundled report machine.
	DefaultMachine = "report"
)

// Params of a report instance.
const (
	ParamClient = "client"
	ParamDay    = "day"
	ParamStaged = "staged" // path of the transformed report
	ParamSHA256 = "sha256" // its digest, checked before the upload
	ParamError  = "error"  // the last error, set by the worker
)

// Config configures a Run. The zero value runs DefaultItems items with
// DefaultWorkers workers on an in-process server, against an API that
// never fails.
type Config struct {
	// Addr is a dfsmr server to use; empty starts one in-process on a
	// fresh bbolt file in Dir.
	Addr string
	// Dir holds the staging area, the uploads and the in-process server's
	// file, created when missing; empty: a temporary directory, removed at
	// the end.
	Dir string
	// Items is how many reports to move; default DefaultItems.
	Items int
	// Workers is the worker's concurrency; default DefaultWorkers.
	Workers int
	// API configures the reporting API simulator.
	API reportapi.Options
	// Machine is the machine to run; default DefaultMachine. Its download
	// node is "downloadable" and its upload node "uploadable", with
	// transitions ok, error, throttled and give_up (see
	// machines/report.yaml).
	Machine string
	// MachineSource, when set, is defined before the run (for a variant of
	// the report machine, e.g. with shorter retry delays in tests).
	MachineSource string
	// Serial also runs the serial baseline on the same items, after the
	// worker run, and reports the ratio of the wall times.
	Serial bool
	// Progress receives the progress of each run, labelled "dfsmr workers"
	// and "serial loop": a live bar when ProgressTTY is set (one line
	// redrawn in place), else a plain line per second; while the last
	// items wait out a backoff, the line says so. Nil: none.
	Progress    io.Writer
	ProgressTTY bool
	// Logger receives the server's and the worker's logs; nil: discarded.
	Logger *slog.Logger
	// DialOptions are added when dialing Addr, such as the credentials of
	// a server with authentication (client.WithToken). Nil: none.
	DialOptions []grpc.DialOption
}

// Labels of the progress lines of the two runs.
const (
	labelWorkers = "dfsmr workers"
	labelSerial  = "serial loop"
)

// Result is what a Run measured.
type Result struct {
	Items     int
	Workers   int
	Completed int
	Failed    int
	// Wall is the worker run's wall time, from the first start to the
	// last final change.
	Wall time.Duration
	// Retries and Throttles count error and throttled transitions.
	Retries   int
	Throttles int
	// API is what the simulator answered during the worker run.
	API reportapi.Stats
	// Upload is what the uploader did during the worker run.
	Upload UploadStats
	// Serial* are the serial baseline's, when Config.Serial.
	SerialWall      time.Duration
	SerialCompleted int
	SerialFailed    int
	SerialAPI       reportapi.Stats
	// Speedup is SerialWall / Wall (0 without the baseline).
	Speedup float64
	// Prefix is the instance id prefix of this run's items: the id of an
	// item is Prefix + client + "-" + day.
	Prefix string
}

// String is the human summary of r.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dfsmr workers  %d items, %d workers: %d completed, %d failed in %v (%d retries, %d throttled; API: %d requests, %d failed, %d throttled)\n",
		r.Items, r.Workers, r.Completed, r.Failed, r.Wall.Round(time.Millisecond), r.Retries, r.Throttles, r.API.Requests, r.API.Failed, r.API.Throttled)
	fmt.Fprintf(&b, "uploads        %d written, %d repeated (identical), %d conflicts\n", r.Upload.Uploads, r.Upload.Repeats, r.Upload.Conflicts)
	if r.SerialWall > 0 {
		fmt.Fprintf(&b, "serial loop    %d completed, %d failed in %v (API: %d requests, %d failed, %d throttled)\n",
			r.SerialCompleted, r.SerialFailed, r.SerialWall.Round(time.Millisecond), r.SerialAPI.Requests, r.SerialAPI.Failed, r.SerialAPI.Throttled)
		fmt.Fprintf(&b, "speedup        %.1fx (serial wall time / dfsmr wall time)\n", r.Speedup)
	}
	return b.String()
}

func (c Config) withDefaults() Config {
	if c.Items == 0 {
		c.Items = DefaultItems
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.Machine == "" {
		c.Machine = DefaultMachine
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Run moves the items through dfsmr with a client.Worker, then, with
// Config.Serial, through the serial loop, and returns the figures.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	if cfg.Items < 0 || cfg.Workers < 0 {
		return Result{}, errors.New("reportdemo: items and workers must not be negative")
	}
	dir := cfg.Dir
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return Result{}, err
		}
	} else {
		tmp, err := os.MkdirTemp("", "dfsmr-report")
		if err != nil {
			return Result{}, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	addr := cfg.Addr
	if addr == "" {
		srv, err := server.New(ctx, server.Config{Addr: "127.0.0.1:0", DB: filepath.Join(dir, "dfsmr.db"), Logger: cfg.Logger})
		if err != nil {
			return Result{}, err
		}
		if err := srv.Start(ctx, nil); err != nil {
			return Result{}, err
		}
		defer srv.Stop(context.WithoutCancel(ctx))
		addr = srv.Addr()
	}
	c, err := client.Dial(addr, cfg.DialOptions...)
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	if cfg.MachineSource != "" {
		if _, err := c.Machines.DefineMachine(ctx, &pb.DefineMachineRequest{Source: cfg.MachineSource, FileName: cfg.Machine + ".yaml"}); err != nil {
			return Result{}, fmt.Errorf("define %s: %w", cfg.Machine, err)
		}
	}
	m, err := c.Machines.GetMachine(ctx, &pb.GetMachineRequest{Id: cfg.Machine})
	if err != nil {
		return Result{}, fmt.Errorf("machine %s: %w", cfg.Machine, err)
	}

	items := Items(cfg.Items, reportapi.Clients(), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	res := Result{Items: cfg.Items, Workers: cfg.Workers, Prefix: fmt.Sprintf("r%d-", time.Now().UnixNano())}
	if err := runWorkers(ctx, c, cfg, dir, items, &res); err != nil {
		return res, err
	}
	if cfg.Serial {
		if err := runSerial(ctx, cfg, dir, items, retryPolicy(m.GetMachine()), &res); err != nil {
			return res, err
		}
		res.Speedup = res.SerialWall.Seconds() / res.Wall.Seconds()
	}
	return res, nil
}

// runWorkers starts one instance per item and runs them with a
// client.Worker until every one is final.
func runWorkers(ctx context.Context, c *client.Client, cfg Config, dir string, items []Item, res *Result) error {
	api, err := reportapi.Start(cfg.API)
	if err != nil {
		return err
	}
	defer api.Close()
	stage := filepath.Join(dir, "staging")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return err
	}
	p := &Pipeline{
		Download: &Downloader{BaseURL: api.URL(), HTTP: httpClient(cfg.Workers)},
		Upload:   &Uploader{Dir: filepath.Join(dir, "uploads")},
		Stage:    stage,
	}
	w := client.NewWorker(c, client.WorkerOptions{
		Name: "report-demo", Concurrency: cfg.Workers, Poll: time.Second, ErrorParam: ParamError, Logger: cfg.Logger,
	})
	w.Handle(cfg.Machine, "downloadable", p.HandleDownload)
	w.Handle(cfg.Machine, "uploadable", p.HandleUpload)

	var counts progressCounts
	begin := time.Now()
	for i, it := range items {
		_, err := c.Instances.StartInstance(ctx, &pb.StartInstanceRequest{
			Id: res.Prefix + it.Client + "-" + it.Day, Machine: cfg.Machine,
			Params: map[string]string{ParamClient: it.Client, ParamDay: it.Day},
		})
		if err != nil {
			return fmt.Errorf("start item %d: %w", i, err)
		}
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	stopBar := showProgress(cfg.Progress, cfg.ProgressTTY, labelWorkers, len(items), &counts, begin)
	err = follow(ctx, c, cfg.Machine, res.Prefix, len(items), &counts)
	res.Wall = time.Since(begin)
	stopBar()
	if serr := w.Stop(ctx); err == nil {
		err = serr
	}
	res.Completed, res.Failed = int(counts.completed.Load()), int(counts.failed.Load())
	res.Retries, res.Throttles = int(counts.retries.Load()), int(counts.throttles.Load())
	res.API, res.Upload = api.Stats(), p.Upload.Stats()
	return err
}

// httpClient keeps enough idle connections for every worker.
func httpClient(workers int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = workers
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

// progressCounts are updated from the changelog (or, for the serial
// loop, from its uploads).
type progressCounts struct {
	completed, failed, retries, throttles atomic.Int64

	mu sync.Mutex
	// due holds the due time of every item WAITING out a backoff or a
	// Retry-After, by instance id.
	due map[string]time.Time
}

// setWaiting records whether item id waits, and until when.
func (p *progressCounts) setWaiting(id string, waiting bool, until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !waiting {
		delete(p.due, id)
		return
	}
	if p.due == nil {
		p.due = make(map[string]time.Time)
	}
	p.due[id] = until
}

// snapshot reads the counts at one moment.
func (p *progressCounts) snapshot() progressSnapshot {
	s := progressSnapshot{
		Completed: p.completed.Load(), Failed: p.failed.Load(),
		Retries: p.retries.Load(), Throttles: p.throttles.Load(),
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s.Waiting = len(p.due)
	for _, t := range p.due {
		if s.NextDue.IsZero() || t.Before(s.NextDue) {
			s.NextDue = t
		}
	}
	return s
}

// progressSnapshot is what a progress line shows.
type progressSnapshot struct {
	Completed, Failed, Retries, Throttles int64
	// Waiting items wait out a backoff; the first is due at NextDue.
	Waiting int
	NextDue time.Time
}

// progressLine is one line of progress of the run called label: its bar
// (when width > 0), its counts and, when every item left is waiting out a
// backoff, a hint that says so and when the next one is due, so that a run
// that seems stuck at the end is seen to wait on purpose.
func progressLine(label string, total int, s progressSnapshot, elapsed time.Duration, now time.Time, width int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-13s ", label)
	if width > 0 {
		filled := int(math.Round(float64(s.Completed+s.Failed) / float64(max(total, 1)) * float64(width)))
		filled = min(max(filled, 0), width)
		fmt.Fprintf(&b, "[%s%s] ", strings.Repeat("#", filled), strings.Repeat(".", width-filled))
	}
	fmt.Fprintf(&b, "%d/%d completed, %d failed, %d retries, %d throttled, %.1fs",
		s.Completed, total, s.Failed, s.Retries, s.Throttles, elapsed.Seconds())
	left := int64(total) - s.Completed - s.Failed
	switch {
	case s.Waiting > 0 && int64(s.Waiting) >= left:
		next := max(s.NextDue.Sub(now), 0).Round(100 * time.Millisecond)
		fmt.Fprintf(&b, " (the last %d waiting out a backoff, next due in %v)", s.Waiting, next)
	case s.Waiting > 0:
		fmt.Fprintf(&b, " (%d waiting out a backoff)", s.Waiting)
	}
	return b.String()
}

// follow tails the changelog of machine until n instances with prefix
// are final, counting outcomes.
func follow(ctx context.Context, c *client.Client, machine, prefix string, n int, counts *progressCounts) error {
	errDone := errors.New("all final")
	final := 0
	err := c.FollowRetained(ctx, &pb.ChangesRequest{FromSeq: 1, Machine: machine}, func(ch *pb.Change) error {
		if !strings.HasPrefix(ch.GetInstance(), prefix) {
			return nil
		}
		waiting := ch.GetToStatus() == pb.InstanceStatus_INSTANCE_STATUS_WAITING
		counts.setWaiting(ch.GetInstance(), waiting, ch.GetDueTime().AsTime())
		if ch.GetKind() == pb.ChangeKind_CHANGE_KIND_TRANSITIONED {
			switch ch.GetTransition() {
			case "error":
				counts.retries.Add(1)
			case "throttled":
				counts.throttles.Add(1)
			}
		}
		if ch.GetToStatus() == pb.InstanceStatus_INSTANCE_STATUS_FINAL {
			if ch.GetToNode() == "completed" {
				counts.completed.Add(1)
			} else {
				counts.failed.Add(1)
			}
			if final++; final == n {
				return errDone
			}
		}
		return nil
	})
	if errors.Is(err, errDone) {
		return nil
	}
	return err
}

// showProgress draws the progress of total items of the run called label
// until the returned function is called, which draws the final state: a
// bar redrawn in place on a terminal, a plain line a second otherwise.
func showProgress(w io.Writer, tty bool, label string, total int, counts *progressCounts, begin time.Time) (stop func()) {
	if w == nil {
		return func() {}
	}
	draw := func(final bool) {
		now := time.Now()
		if !tty {
			fmt.Fprintln(w, progressLine(label, total, counts.snapshot(), now.Sub(begin), now, 0))
			return
		}
		end := ""
		if final {
			end = "\n"
		}
		fmt.Fprintf(w, "\r\x1b[K%s%s", progressLine(label, total, counts.snapshot(), now.Sub(begin), now, 30), end)
	}
	period := time.Second
	if tty {
		period = 100 * time.Millisecond
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				draw(false)
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		draw(true)
	}
}
