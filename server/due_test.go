package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

const tickYAML = `id: tick
nodes:
  work:
    start: true
    transitions: {ok: done}
  done: {final: true}
`

// woke is when an instance became READY: the WOKEN change's time (server
// clock) and when the test received it (wall clock).
type woke struct{ at, got time.Time }

// wokeWatcher records the WOKEN changes of a Changes stream, resuming after
// the last sequence number it saw when it falls behind.
type wokeWatcher struct {
	mu    sync.Mutex
	last  uint64
	woken map[string][]woke
}

func newWokeWatcher() *wokeWatcher { return &wokeWatcher{last: 0, woken: map[string][]woke{}} }

// run follows env's changelog until ctx ends or the server stops.
func (w *wokeWatcher) run(ctx context.Context, env *testEnv) error {
	for {
		w.mu.Lock()
		from := w.last + 1
		w.mu.Unlock()
		stream, err := env.changes.Changes(ctx, &pb.ChangesRequest{FromSeq: from, Machine: "tick"})
		if err != nil {
			if serverGone(err) {
				return nil
			}
			return err
		}
		for {
			r, err := stream.Recv()
			if err != nil {
				if ctx.Err() != nil || serverGone(err) {
					return nil
				}
				break // fell behind: resume
			}
			c := r.GetChange()
			got := time.Now()
			w.mu.Lock()
			w.last = c.GetSeq()
			if c.GetKind() == pb.ChangeKind_CHANGE_KIND_WOKEN {
				w.woken[c.GetInstance()] = append(w.woken[c.GetInstance()], woke{c.GetTime().AsTime(), got})
			}
			w.mu.Unlock()
		}
	}
}

// serverGone: the server stopped or the test closed its connection; the
// next server resumes where the stream left off.
func serverGone(err error) bool {
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.Canceled
}

func (w *wokeWatcher) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.woken)
}

// startDelayed starts n tick instances with seeded random start delays up to
// 5s, from 64 goroutines, and returns each one's due time.
func startDelayed(t *testing.T, env *testEnv, n int, seed uint64) map[string]time.Time {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	delays := make([]time.Duration, n)
	for i := range delays {
		delays[i] = time.Duration(r.Int64N(int64(5 * time.Second)))
	}
	due := make(map[string]time.Time, n)
	var mu sync.Mutex
	idx := make(chan int)
	errs := make(chan error, 64)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				id := fmt.Sprintf("d-%05d", i)
				resp, err := env.instances.StartInstance(context.Background(), &pb.StartInstanceRequest{Id: id, Machine: "tick", StartDelay: durationpb.New(delays[i])})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				due[id] = resp.GetInstance().GetDueTime().AsTime()
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		idx <- i
	}
	close(idx)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return due
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// dueCount is how many instances the due-time tests start: 10,000, or
// 1,000 with -short and 2,000 under the race detector (which makes starting
// them take longer than the delays).
func dueCount() int {
	switch {
	case testing.Short():
		return 1000
	case raceEnabled:
		return 2000
	}
	return 10000
}

// checkWoken asserts that every instance became READY exactly once and
// never before its due time, and returns the lateness of those due at or
// after from (by the change's time, and by receipt).
func checkWoken(t *testing.T, w *wokeWatcher, due map[string]time.Time, from time.Time) (late, recv []time.Duration) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, at := range due {
		ws := w.woken[id]
		if len(ws) != 1 {
			t.Errorf("%s woken %d times", id, len(ws))
			continue
		}
		if ws[0].at.Before(at) || ws[0].got.Before(at) {
			t.Errorf("%s due %v became READY early: at %v, received %v", id, at, ws[0].at, ws[0].got)
		}
		if !at.Before(from) {
			late = append(late, ws[0].at.Sub(at))
			recv = append(recv, ws[0].got.Sub(at))
		}
	}
	return late, recv
}

func TestDueTimesOnTime(t *testing.T) {
	n := dueCount()
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, tickYAML)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWokeWatcher()
	done := make(chan error, 1)
	go func() { done <- w.run(ctx, env) }()
	t0 := time.Now()
	due := startDelayed(t, env, n, 42)
	t.Logf("started %d instances in %v", n, time.Since(t0))
	waitFor(t, func() bool { return w.count() == n })
	cancel()
	<-done
	late, recv := checkWoken(t, w, due, time.Time{})
	p50 := quantile(late, 0.5)
	t.Logf("lateness of %d instances: p50 %v p99 %v max %v; by receipt p50 %v p99 %v",
		len(late), p50, quantile(late, 0.99), quantile(late, 1), quantile(recv, 0.5), quantile(recv, 0.99))
}

func TestDueTimesAcrossRestart(t *testing.T) {
	n := dueCount()
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, tickYAML)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWokeWatcher()
	done := make(chan error, 1)
	go func() { done <- w.run(ctx, env) }()
	t0 := time.Now()
	due := startDelayed(t, env, n, 7)
	t.Logf("started %d instances in %v", n, time.Since(t0))
	time.Sleep(time.Until(t0.Add(2500 * time.Millisecond)))
	stopAt := time.Now()
	env.stop(t)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // some instances come due meanwhile
	env = mustServer(t, server.Config{NoBundled: true, DB: env.db})
	restartAt := time.Now()
	go func() { done <- w.run(ctx, env) }()
	t.Logf("down from %v to %v after start (%v)", stopAt.Sub(t0), restartAt.Sub(t0), restartAt.Sub(stopAt))
	waitFor(t, func() bool { return w.count() == n })
	cancel()
	<-done
	late, recv := checkWoken(t, w, due, restartAt)
	// Those due while the server was down fire at start.
	w.mu.Lock()
	var downtime, catchUp []time.Duration
	for id, at := range due {
		ws := w.woken[id]
		if len(ws) == 1 && at.After(stopAt) && at.Before(restartAt) {
			downtime = append(downtime, ws[0].at.Sub(at))
			catchUp = append(catchUp, ws[0].at.Sub(restartAt))
		}
	}
	w.mu.Unlock()
	if len(downtime) == 0 {
		t.Error("no instance came due during the downtime")
	}
	p50 := quantile(late, 0.5)
	t.Logf("%d due during the downtime: fired p50 %v / max %v after the restart; %d due after the restart: lateness p50 %v p99 %v max %v; by receipt p50 %v p99 %v",
		len(downtime), quantile(catchUp, 0.5), quantile(catchUp, 1), len(late), p50, quantile(late, 0.99), quantile(late, 1), quantile(recv, 0.5), quantile(recv, 0.99))
}

func TestIdleWaitersEachGetOneInstance(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	define(t, env, tickYAML)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const waiters = 64
	got := make(chan string, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: fmt.Sprint("w", i), Machine: "tick", Wait: durationpb.New(time.Minute)})
			if err == nil && r.GetLease() != nil {
				got <- r.GetInstance().GetId()
			} else {
				got <- ""
			}
		}()
	}
	eng := env.srv.Engine()
	waitFor(t, func() bool { return eng.Waiting() == waiters })
	base := eng.ReadyWakeups()

	// Measurement, not an assertion: the process's CPU while the waiters
	// idle.
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	time.Sleep(2 * time.Second)
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()-before.Utime.Nano()) + time.Duration(after.Stime.Nano()-before.Stime.Nano())
	t.Logf("CPU while %d waiters idle for 2s: %.1f ms (%d Ready wake-ups)", waiters, float64(cpu)/float64(time.Millisecond), eng.ReadyWakeups()-base)
	if n := eng.ReadyWakeups() - base; n != 0 {
		t.Errorf("%d Ready wake-ups while idle", n)
	}

	for i := range waiters {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprint("t-", i), Machine: "tick"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return eng.Waiting() == waiters-i-1 })
	}
	wg.Wait()
	close(got)
	var ids []string
	for id := range got {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(slices.Compact(slices.Clone(ids))) != waiters || slices.Contains(ids, "") {
		t.Fatalf("waiters got %v", ids)
	}
	if n := eng.ReadyWakeups() - base; n != waiters {
		t.Errorf("%d Ready wake-ups for %d instances, want one each", n, waiters)
	}
}
