package sched

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/server/store"
)

// recorder is a Fire that records its calls and can be told what to return.
type recorder struct {
	mu    sync.Mutex
	fired []string
	fail  bool
	later map[string]time.Time
	calls chan []string
}

func newRecorder() *recorder {
	return &recorder{later: map[string]time.Time{}, calls: make(chan []string, 100)}
}

func (r *recorder) fire(_ context.Context, ids []string) ([]store.Due, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer func() { r.calls <- slices.Clone(ids) }()
	if r.fail {
		r.fail = false
		return nil, errors.New("boom")
	}
	var later []store.Due
	for _, id := range ids {
		if at, ok := r.later[id]; ok {
			delete(r.later, id)
			later = append(later, store.Due{At: at, ID: id})
			continue
		}
		r.fired = append(r.fired, id)
	}
	return later, nil
}

func (r *recorder) next(t *testing.T) []string {
	t.Helper()
	select {
	case ids := <-r.calls:
		return ids
	case <-time.After(5 * time.Second):
		t.Fatal("no Fire call in 5s")
		return nil
	}
}

func (r *recorder) none(t *testing.T) {
	t.Helper()
	select {
	case ids := <-r.calls:
		t.Fatalf("unexpected Fire(%v)", ids)
	case <-time.After(20 * time.Millisecond):
	}
}

// settle waits until the scheduler's goroutine has armed its timer on the
// fake clock (or has none to arm).
func settle(t *testing.T, fake *clock.Fake, timers int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for fake.Timers() != timers {
		if time.Now().After(deadline) {
			t.Fatalf("timers = %d, want %d", fake.Timers(), timers)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSchedulerFiresOnTime(t *testing.T) {
	fake := clock.NewFake(t0)
	rec := newRecorder()
	s := New(Options{
		Clock: fake,
		Load: func(context.Context) ([]store.Due, error) {
			// "old" came due while the server was down.
			return []store.Due{{At: t0.Add(-time.Minute), ID: "old"}, {At: t0.Add(10 * time.Second), ID: "b"}}, nil
		},
		Fire: rec.fire,
	})
	s.Update("ignored", t0, true) // before Start: Load covers it
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)
	if got := rec.next(t); !slices.Equal(got, []string{"old"}) {
		t.Fatalf("first fire = %v", got)
	}
	settle(t, fake, 1)
	if n := s.Len(); n != 1 {
		t.Fatalf("Len = %d after the first fire, want 1 (b)", n)
	}
	s.Update("a", t0.Add(5*time.Second), true)
	s.Update("c", t0.Add(7*time.Second), true)
	s.Update("c", time.Time{}, false) // removed again
	fake.Advance(4 * time.Second)
	rec.none(t)
	fake.Advance(time.Second)
	if got := rec.next(t); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("fire at 5s = %v", got)
	}
	// A stale entry: Fire finds b due later and hands it back.
	rec.mu.Lock()
	rec.later["b"] = t0.Add(20 * time.Second)
	rec.mu.Unlock()
	fake.Advance(5 * time.Second)
	if got := rec.next(t); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("fire at 10s = %v", got)
	}
	settle(t, fake, 1)
	fake.Advance(9 * time.Second)
	rec.none(t)
	// A failed Fire is retried after Retry (1s).
	rec.mu.Lock()
	rec.fail = true
	rec.mu.Unlock()
	fake.Advance(time.Second)
	if got := rec.next(t); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("fire at 20s = %v", got)
	}
	settle(t, fake, 1)
	fake.Advance(time.Second)
	if got := rec.next(t); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("retry = %v", got)
	}
	// No timer is left once the retry's fired, which is before the pass
	// that fired it stores the heap's length: wait for that too.
	settle(t, fake, 0)
	for deadline := time.Now().Add(5 * time.Second); s.Len() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Len = %d with nothing due, want 0", s.Len())
		}
	}
	rec.mu.Lock()
	fired := slices.Clone(rec.fired)
	rec.mu.Unlock()
	if want := []string{"old", "a", "b"}; !slices.Equal(fired, want) {
		t.Fatalf("fired = %v, want %v", fired, want)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	s.Update("late", t0, true) // after Stop: ignored, no panic
}

func TestSchedulerBatches(t *testing.T) {
	fake := clock.NewFake(t0)
	rec := newRecorder()
	var all []store.Due
	for i := range 10 {
		all = append(all, store.Due{At: t0.Add(time.Duration(i) * time.Millisecond), ID: string(rune('a' + i))})
	}
	s := New(Options{Clock: fake, Batch: 4, Fire: rec.fire,
		Load: func(context.Context) ([]store.Due, error) { return all, nil }})
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)
	fake.Advance(time.Second)
	var sizes []int
	for n := 0; n < 10; {
		ids := rec.next(t)
		sizes = append(sizes, len(ids))
		n += len(ids)
	}
	for _, n := range sizes {
		if n > 4 {
			t.Fatalf("batch sizes %v exceed 4", sizes)
		}
	}
}

func TestSchedulerStopNeverStarted(t *testing.T) {
	s := New(Options{})
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestSchedulerLoadError(t *testing.T) {
	s := New(Options{Load: func(context.Context) ([]store.Due, error) { return nil, errors.New("disk") }})
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded despite the load error")
	}
}
