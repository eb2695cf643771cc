package reportdemo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/dfsmr/dfsmr/client"
	"github.com/dfsmr/dfsmr/client/backoff"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/reportapi"
)

// Pipeline holds the steps of one report item. Its handlers are what a
// client.Worker runs for the report machine's nodes.
type Pipeline struct {
	Download *Downloader
	Upload   *Uploader
	// Stage is where transformed reports wait for their upload.
	Stage string
}

func itemOf(in *pb.Instance) Item {
	return Item{Client: in.GetParams()[ParamClient], Day: in.GetParams()[ParamDay]}
}

// HandleDownload is the downloadable node: download, transform and stage
// the report. A 429 becomes the throttled transition with the API's
// Retry-After as its delay (only this item waits); a malformed report is
// not worth retrying (give_up); any other failure is an error, retried
// with the node's backoff.
func (p *Pipeline) HandleDownload(ctx context.Context, in *pb.Instance) (client.Result, error) {
	it := itemOf(in)
	raw, err := p.Download.Download(ctx, it)
	if throttled, ok := errors.AsType[*ThrottledError](err); ok {
		return client.Result{Transition: "throttled", Delay: throttled.RetryAfter}, nil
	}
	if err != nil {
		return client.Result{}, err
	}
	out, err := Transform(raw)
	if err != nil {
		return client.Result{Transition: "give_up", Params: map[string]string{ParamError: err.Error()}}, nil
	}
	path := filepath.Join(p.Stage, in.GetId()+".csv")
	if err := writeAtomic(path, out); err != nil {
		return client.Result{}, err
	}
	return client.Result{Transition: "ok", Params: map[string]string{ParamStaged: path, ParamSHA256: digest(out)}}, nil
}

// HandleUpload is the uploadable node: upload the staged report under the
// item's key. Uploading it again (a retry after a lost reply) is
// harmless; different content under the key is a conflict, given up.
func (p *Pipeline) HandleUpload(_ context.Context, in *pb.Instance) (client.Result, error) {
	data, err := os.ReadFile(in.GetParams()[ParamStaged])
	if err != nil {
		return client.Result{}, err
	}
	if got := digest(data); got != in.GetParams()[ParamSHA256] {
		return client.Result{}, fmt.Errorf("staged report %s has digest %s, want %s", in.GetParams()[ParamStaged], got, in.GetParams()[ParamSHA256])
	}
	err = p.Upload.Upload(itemOf(in).Key(), data)
	if conflict, ok := errors.AsType[*ConflictError](err); ok {
		return client.Result{Transition: "give_up", Params: map[string]string{ParamError: conflict.Error()}}, nil
	}
	if err != nil {
		return client.Result{}, err
	}
	return client.Result{Transition: "ok"}, nil
}

// Retry is the serial loop's retry policy: the same as the machine's
// download node (its growth, initial, max and jitter), so that the
// comparison is fair.
type Retry struct {
	MaxAttempts int
	Backoff     backoff.Policy
}

// delay is the wait after the attempt-th failure (from 1), with the
// jitter draw u in [0, 1).
func (r Retry) delay(attempt int, u float64) time.Duration {
	return r.Backoff.Delay(int64(attempt), u)
}

// retryPolicy reads the download node's retry policy from m.
func retryPolicy(m *pb.Machine) Retry {
	for _, n := range m.GetNodes() {
		if n.GetName() != "downloadable" {
			continue
		}
		r := n.GetRetry()
		p := backoff.Policy{Initial: r.GetInitial().AsDuration(), Max: r.GetMax().AsDuration(), Jitter: r.GetJitter()}
		switch r.GetBackoff() {
		case pb.Backoff_BACKOFF_LINEAR:
			p.Growth = backoff.Linear
		case pb.Backoff_BACKOFF_EXPONENTIAL:
			p.Growth = backoff.Exponential
		default:
			p.Growth = backoff.Fixed
		}
		return Retry{MaxAttempts: int(r.GetMaxAttempts()), Backoff: p}
	}
	return Retry{MaxAttempts: 1}
}

// Serial moves items one after the other, the way a plain script does:
// download, transform and upload an item; on any failure sleep (the
// Retry-After of a 429, else the policy's backoff) and retry the whole
// item in place, up to policy.MaxAttempts failures. Nothing else moves
// while it sleeps. It returns how many items completed and failed.
func Serial(ctx context.Context, d *Downloader, u *Uploader, items []Item, policy Retry) (completed, failed int, err error) {
	for _, it := range items {
		for attempt := 1; ; attempt++ {
			err := serialItem(ctx, d, u, it)
			if err == nil {
				completed++
				break
			}
			if ctx.Err() != nil {
				return completed, failed, ctx.Err()
			}
			if _, ok := errors.AsType[*ConflictError](err); ok || attempt >= policy.MaxAttempts {
				failed++
				break
			}
			wait := policy.delay(attempt, rand.Float64())
			if t, ok := errors.AsType[*ThrottledError](err); ok {
				wait = t.RetryAfter
			}
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return completed, failed, ctx.Err()
			case <-timer.C:
			}
		}
	}
	return completed, failed, nil
}

func serialItem(ctx context.Context, d *Downloader, u *Uploader, it Item) error {
	raw, err := d.Download(ctx, it)
	if err != nil {
		return err
	}
	out, err := Transform(raw)
	if err != nil {
		return err
	}
	return u.Upload(it.Key(), out)
}

// runSerial runs the serial baseline against a fresh simulator with the
// same options, uploading to its own directory.
func runSerial(ctx context.Context, cfg Config, dir string, items []Item, policy Retry, res *Result) error {
	api, err := reportapi.Start(cfg.API)
	if err != nil {
		return err
	}
	defer api.Close()
	d := &Downloader{BaseURL: api.URL(), HTTP: httpClient(1)}
	u := &Uploader{Dir: filepath.Join(dir, "uploads-serial")}
	var counts progressCounts
	begin := time.Now()
	stop := showProgress(cfg.Progress, cfg.ProgressTTY, labelSerial, len(items), &counts, begin)
	done := make(chan struct{})
	go func() {
		// The serial loop has no changelog: count its uploads.
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				counts.completed.Store(u.uploads.Load() + u.repeats.Load())
			}
		}
	}()
	res.SerialCompleted, res.SerialFailed, err = Serial(ctx, d, u, items, policy)
	res.SerialWall = time.Since(begin)
	close(done)
	counts.completed.Store(int64(res.SerialCompleted))
	counts.failed.Store(int64(res.SerialFailed))
	stop()
	res.SerialAPI = api.Stats()
	return err
}
