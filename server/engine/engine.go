package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dfsmr/dfsmr/server/clock"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// SystemActor is the actor of changes the server makes on its own (wakes,
// timeouts).
const SystemActor = "dfsmr"

// dueBatch bounds how many due instances one transaction of the due loop
// handles, so one overdue backlog cannot make a huge transaction.
const dueBatch = 256

// idleWait is how long the due loop sleeps when nothing is due at all; any
// commit that creates a due time wakes it earlier.
const idleWait = time.Hour

// Options configure an Engine. The zero value works with the real clock.
type Options struct {
	// Clock is the time source; default the wall clock.
	Clock clock.Clock
	// Rand draws retry jitter and generated ids; default a randomly seeded
	// PCG. Inject a seeded one for deterministic runs.
	Rand *rand.Rand
	// Logger receives the engine's logs; default slog.Default().
	Logger *slog.Logger
}

// Engine runs the operations of dfsmr against a store.
type Engine struct {
	st     store.Store
	clock  clock.Clock
	log    *slog.Logger
	cache  machineCache
	wait   waiters
	randMu sync.Mutex
	rand   *rand.Rand

	nudge    chan struct{}
	armed    atomic.Int64 // unix nanos the due loop's timer is armed for
	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

// New returns an engine over st. Call Start to run its due loop, and route
// the store's commit hook to OnCommit.
func New(st store.Store, opts Options) *Engine {
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Rand == nil {
		opts.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Engine{
		st:    st,
		clock: opts.Clock,
		log:   opts.Logger.With("component", "engine"),
		rand:  opts.Rand,
		nudge: make(chan struct{}, 1),
	}
}

// Start runs the due loop, which wakes WAITING instances and times out
// expired leases on time; it first catches up with everything that came due
// while the server was down. Before that it finishes any upgrade sweep a
// crash cut short (see sweepMachine). Start returns once the loop runs.
func (e *Engine) Start(ctx context.Context) error {
	if e.done != nil {
		return errors.New("engine already started")
	}
	if err := e.sweepUpgrades(ctx); err != nil {
		return err
	}
	ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	e.done = make(chan struct{})
	go e.dueLoop(ctx)
	return nil
}

// Stop ends the due loop and waits for it. It is idempotent and safe when
// the engine was never started.
func (e *Engine) Stop(ctx context.Context) error {
	if e.done == nil {
		return nil
	}
	e.stopOnce.Do(e.cancel)
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// OnCommit must receive the store's committed changes (see
// store.CommitHook). It wakes one long-polling Ready per instance that
// became READY, and the due loop when a due time was set.
func (e *Engine) OnCommit(changes []fsm.Change) {
	due := false
	armed := e.armed.Load()
	for i := range changes {
		c := &changes[i]
		if c.ToStatus == fsm.StatusReady {
			e.wait.wakeOne(c.Machine, c.ToNode)
		}
		// Only a due time earlier than the one the loop waits for needs
		// it: later ones are found when it wakes.
		if !c.DueAt.IsZero() && c.DueAt.UnixNano() < armed {
			due = true
		}
	}
	if due {
		select {
		case e.nudge <- struct{}{}:
		default:
		}
	}
}

func (e *Engine) dueLoop(ctx context.Context) {
	defer close(e.done)
	timer := e.clock.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		case <-e.nudge:
		}
		// While processing, every due time committed meanwhile nudges the
		// loop, which then looks again: none can slip in unseen.
		e.armed.Store(math.MaxInt64)
		next, err := e.ProcessDue(ctx)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			e.log.Error("due loop", "err", err)
			next = e.clock.Now().Add(time.Second)
		case next.IsZero():
			next = e.clock.Now().Add(idleWait)
		}
		e.armed.Store(next.UnixNano())
		timer.ResetAt(next)
	}
}

// ProcessDue wakes every WAITING instance and expires every lease whose time
// has come, and returns the next due time (zero when nothing is due).
func (e *Engine) ProcessDue(ctx context.Context) (time.Time, error) {
	for {
		// Look before writing: most wake-ups find nothing due yet, and a
		// read does not queue behind the store's writer.
		next, err := e.nextDue(ctx)
		if err != nil || next.IsZero() || next.After(e.clock.Now()) {
			return next, err
		}
		err = e.st.Update(ctx, func(tx store.Tx) error {
			now := e.clock.Now()
			due, err := tx.Due(now, dueBatch)
			if err != nil {
				return err
			}
			for _, d := range due {
				if err := e.applyDue(tx, d.ID, now); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return time.Time{}, err
		}
	}
}

func (e *Engine) nextDue(ctx context.Context) (time.Time, error) {
	var next store.Due
	err := e.st.View(ctx, func(tx store.ReadTx) error {
		var err error
		next, _, err = tx.NextDue()
		return err
	})
	return next.At, err
}

func (e *Engine) applyDue(tx store.Tx, id string, now time.Time) error {
	in, err := tx.Instance(id)
	if err != nil {
		return fmt.Errorf("due instance %q: %w", id, err)
	}
	m, err := e.machineVersion(tx, in.Machine, in.Version)
	if err != nil {
		return err
	}
	var ev fsm.Event = fsm.Wake{}
	if in.Status == fsm.StatusLeased {
		ev = fsm.Expire{Token: in.Lease.Token, Jitter: e.jitter()}
	}
	return e.apply(tx, m, in, ev, now, SystemActor, nil)
}

// apply runs the core and writes its result in tx. out, when not nil,
// receives the new instance. An empty actor is the lease's worker: work
// calls are recorded under the worker that holds the lease.
func (e *Engine) apply(tx store.Tx, m *fsm.Machine, in fsm.Instance, ev fsm.Event, now time.Time, actor string, out *fsm.Instance) error {
	if actor == "" {
		actor = in.Lease.Worker
	}
	next, changes, err := fsm.Apply(m, in, ev, now)
	if err != nil {
		return err
	}
	if out != nil {
		*out = next
	}
	if changes == nil { // an idempotent repeat: nothing to write
		return nil
	}
	return e.write(tx, next, changes, actor)
}

func (e *Engine) write(tx store.Tx, in fsm.Instance, changes []fsm.Change, actor string) error {
	if err := tx.PutInstance(in); err != nil {
		return err
	}
	for _, c := range changes {
		c.Actor = actor
		if _, err := tx.AppendChange(c); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) jitter() float64 {
	e.randMu.Lock()
	defer e.randMu.Unlock()
	return e.rand.Float64()
}

func (e *Engine) newID(prefix string) string {
	e.randMu.Lock()
	defer e.randMu.Unlock()
	return fmt.Sprintf("%s-%016x", prefix, e.rand.Uint64())
}
