package sched

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/server/store"
)

// Defaults of Options.
const (
	// DefaultBatch is how many due ids one call of Fire receives at most.
	DefaultBatch = 256
	// DefaultRetry is how long the scheduler waits before it fires ids
	// again whose Fire call failed.
	DefaultRetry = time.Second
)

// Options configure a Scheduler.
type Options struct {
	// Clock is the time source; default the wall clock.
	Clock clock.Clock
	// Logger receives the scheduler's logs; default slog.Default().
	Logger *slog.Logger
	// Load returns every due entry the store knows; Start calls it once to
	// rebuild the heap. Required.
	Load func(ctx context.Context) ([]store.Due, error)
	// Fire handles ids whose due time has come, in one store transaction,
	// re-reading each from the store and skipping the ones no longer due.
	// It returns the entries it found due later than now (the heap had a
	// stale time for them), which the scheduler sets again. On error the
	// ids are fired again after Retry. Fire runs on the scheduler's
	// goroutine; it may commit, and the commit hook may call Update.
	// Required.
	Fire func(ctx context.Context, ids []string) (later []store.Due, err error)
	// Batch bounds the ids of one Fire call; 0 means DefaultBatch.
	Batch int
	// Retry is the delay after a failed Fire; 0 means DefaultRetry.
	Retry time.Duration
}

// Scheduler owns a Heap in one goroutine and calls Fire when its entries
// come due. Others change it only through Update, which never blocks: the
// updates queue in order and the goroutine applies them before it looks at
// the heap, so the last update of an id wins.
type Scheduler struct {
	opts Options
	log  *slog.Logger
	heap Heap // owned by the goroutine once started

	mu      sync.Mutex
	on      bool     // Update records updates (between Start and Stop)
	pending []update // in arrival order
	kick    chan struct{}

	// size is the heap's length as of the goroutine's last change to it,
	// for Len, which must not touch the heap.
	size atomic.Int64

	started  bool
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

type update struct {
	id string
	at time.Time
	ok bool
}

// New returns a scheduler; Start runs it.
func New(opts Options) *Scheduler {
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Batch <= 0 {
		opts.Batch = DefaultBatch
	}
	if opts.Retry <= 0 {
		opts.Retry = DefaultRetry
	}
	return &Scheduler{
		opts: opts,
		log:  opts.Logger.With("component", "sched"),
		kick: make(chan struct{}, 1),
	}
}

// Update says that id is due at at (ok) or not due at all (!ok). It never
// blocks, and does nothing before Start and after Stop: Start loads what
// the store has then.
func (s *Scheduler) Update(id string, at time.Time, ok bool) {
	s.mu.Lock()
	if !s.on {
		s.mu.Unlock()
		return
	}
	s.pending = append(s.pending, update{id, at, ok})
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Start rebuilds the heap from Load and runs the goroutine; entries already
// due fire at once. It returns once the goroutine runs. A scheduler starts
// once.
func (s *Scheduler) Start(ctx context.Context) error {
	if s.started {
		return errors.New("scheduler already started")
	}
	// Record updates before loading: an update that races with the load
	// is applied after it, and the last update of an id is its newest.
	s.mu.Lock()
	s.on = true
	s.mu.Unlock()
	all, err := s.opts.Load(ctx)
	if err != nil {
		s.mu.Lock()
		s.on, s.pending = false, nil
		s.mu.Unlock()
		return err
	}
	for _, d := range all {
		s.heap.Set(d.ID, d.At)
	}
	s.size.Store(int64(s.heap.Len()))
	s.started = true
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.done = make(chan struct{})
	go s.run(ctx)
	return nil
}

// Stop ends the goroutine and waits for it (or for ctx). It is idempotent
// and safe when the scheduler was never started.
func (s *Scheduler) Stop(ctx context.Context) error {
	if !s.started {
		return nil
	}
	s.stopOnce.Do(func() {
		s.cancel()
		s.mu.Lock()
		s.on, s.pending = false, nil
		s.mu.Unlock()
	})
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Len returns how many instances the scheduler is waiting on (WAITING
// instances and leases that can expire), as of its last pass: a gauge for
// metrics, not a synchronisation point.
func (s *Scheduler) Len() int { return int(s.size.Load()) }

func (s *Scheduler) run(ctx context.Context) {
	defer close(s.done)
	timer := s.opts.Clock.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var armed time.Time // when the timer fires; zero: not armed
	for {
		s.drain()
		if ctx.Err() != nil {
			return
		}
		if !s.fireDue(ctx) {
			return
		}
		s.size.Store(int64(s.heap.Len()))
		// One timer, on the head of the heap.
		if head, ok := s.heap.Peek(); !ok {
			if !armed.IsZero() {
				timer.Stop()
				armed = time.Time{}
			}
		} else if !head.At.Equal(armed) {
			timer.ResetAt(head.At)
			armed = head.At
		}
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-timer.C():
			armed = time.Time{}
		}
	}
}

// drain applies the queued updates in order.
func (s *Scheduler) drain() {
	s.mu.Lock()
	ups := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, u := range ups {
		if u.ok {
			s.heap.Set(u.id, u.at)
		} else {
			s.heap.Remove(u.id)
		}
	}
}

// fireDue fires everything due now, in batches; it returns false when ctx
// ended.
func (s *Scheduler) fireDue(ctx context.Context) bool {
	for {
		now := s.opts.Clock.Now()
		due := s.heap.PopDue(now, s.opts.Batch)
		if len(due) == 0 {
			return true
		}
		ids := make([]string, len(due))
		for i, d := range due {
			ids[i] = d.ID
		}
		later, err := s.opts.Fire(ctx, ids)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			s.log.Error("fire due instances", "err", err, "count", len(ids))
			retry := now.Add(s.opts.Retry)
			for _, id := range ids {
				s.heap.Set(id, retry)
			}
		}
		for _, d := range later {
			s.heap.Set(d.ID, d.At)
		}
		// Updates queued meanwhile (the commits of Fire among them) are
		// newer than what Fire read: they win.
		s.drain()
	}
}
