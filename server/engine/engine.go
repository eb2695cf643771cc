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

	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/sched"
	"github.com/dfsmr/dfsmr/server/store"
)

// SystemActor is the actor of changes the server makes on its own (wakes,
// timeouts).
const SystemActor = "dfsmr"

// DefaultMaxHistory is the default of Options.MaxHistory.
const DefaultMaxHistory = 1000

// dueBatch bounds how many due instances one transaction of the scheduler
// handles, so one overdue backlog cannot make a huge transaction.
const dueBatch = 256

// Options configure an Engine. The zero value works with the real clock.
type Options struct {
	// Clock is the time source; default the wall clock.
	Clock clock.Clock
	// Rand draws retry jitter and generated ids; default a randomly seeded
	// PCG. Inject a seeded one for deterministic runs.
	Rand *rand.Rand
	// Logger receives the engine's logs; default slog.Default().
	Logger *slog.Logger
	// MaxHistory bounds the changes GetInstance returns: the last ones of
	// an instance that loops or retries for long. Default
	// DefaultMaxHistory.
	MaxHistory int
	// LiveFlush is how often the live fields of device records (report
	// seq, last-seen time, progress) that quiet rounds did not write are
	// written, 128 devices to a transaction. Default
	// DefaultLiveFlush.
	LiveFlush time.Duration
	// Retention says which changes and FINAL instances the sweeper
	// deletes (see StartRetention); the zero value deletes nothing.
	Retention Retention
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

	maxHistory int

	schedOpts sched.Options
	// sched is the scheduler of the current leadership, nil while this
	// server follows.
	sched atomic.Pointer[sched.Scheduler]

	// retries counts committed retries (see Stats).
	retries atomic.Uint64
	// devices are the device sessions waiting for news of their device.
	devices deviceWatchers
	// live holds the fields of device records that quiet rounds move.
	live      liveDevices
	liveFlush time.Duration
	// leadMu serialises Lead and Follow; lead is what Lead started, nil
	// while following.
	leadMu sync.Mutex
	lead   *leadership

	retention Retention
	sweepMu   sync.Mutex
	// retStop ends the retention sweeper and retDone is closed when it
	// returned; both nil while it does not run.
	retMu   sync.Mutex
	retStop context.CancelFunc
	retDone chan struct{}
}

// leadership is what runs while this server leads.
type leadership struct {
	sched *sched.Scheduler
	// stopLive ends the flusher of live fields; liveDone is closed when
	// it returned.
	stopLive context.CancelFunc
	liveDone chan struct{}
}

// Stats count what the engine committed since New.
type Stats struct {
	// Retries counts failed attempts (an error transition back into the
	// node, or a lease timeout) after which the instance tries its node
	// again; an attempt that uses up the retries is not one.
	Retries uint64
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats { return Stats{Retries: e.retries.Load()} }

// Scheduled returns how many instances the scheduler waits on (WAITING
// instances and expirable leases), as of its last pass.
func (e *Engine) Scheduled() int {
	if s := e.sched.Load(); s != nil {
		return s.Len()
	}
	return 0
}

// New returns an engine over st. Call Lead to run its scheduler where
// writes are made, and route the store's commit hook to OnCommit.
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
	if opts.MaxHistory <= 0 {
		opts.MaxHistory = DefaultMaxHistory
	}
	if opts.LiveFlush <= 0 {
		opts.LiveFlush = DefaultLiveFlush
	}
	if opts.Retention.Interval <= 0 {
		opts.Retention.Interval = DefaultRetentionInterval
	}
	e := &Engine{
		st:         st,
		clock:      opts.Clock,
		log:        opts.Logger.With("component", "engine"),
		rand:       opts.Rand,
		maxHistory: opts.MaxHistory,
		liveFlush:  opts.LiveFlush,
		retention:  opts.Retention,
	}
	e.schedOpts = sched.Options{Clock: opts.Clock, Logger: opts.Logger, Load: e.loadDue, Fire: e.FireDue, Batch: dueBatch}
	return e
}

// Lead runs what only the leader of the cluster runs, once this server
// became it (and applied everything committed before): the scheduler,
// which wakes WAITING instances and times out expired leases on time (it
// rebuilds its heap from the store's due index, so what came due meanwhile
// fires at once), after finishing any upgrade sweep cut short (see
// sweepMachine) and marking offline the devices whose streams were on
// another server or process; and the flusher of the live fields of device
// records (see FlushLive), and the retention sweeper (see
// StartRetention). It returns once they run; leading again is a no-op.
func (e *Engine) Lead(ctx context.Context) error {
	e.leadMu.Lock()
	defer e.leadMu.Unlock()
	if e.lead != nil {
		return nil
	}
	if err := e.Resume(ctx); err != nil {
		return err
	}
	l := &leadership{sched: sched.New(e.schedOpts)}
	e.sched.Store(l.sched)
	if err := l.sched.Start(ctx); err != nil {
		e.sched.Store(nil)
		return err
	}
	var fctx context.Context
	fctx, l.stopLive = context.WithCancel(context.WithoutCancel(ctx))
	l.liveDone = make(chan struct{})
	go func() {
		defer close(l.liveDone)
		e.flushLive(fctx, e.liveFlush)
	}()
	e.lead = l
	e.StartRetention(ctx)
	return nil
}

// Follow stops what Lead started and waits for it (or ctx). It is
// idempotent and safe when this server never led.
func (e *Engine) Follow(ctx context.Context) error {
	e.leadMu.Lock()
	defer e.leadMu.Unlock()
	l := e.lead
	if l == nil {
		return nil
	}
	e.lead = nil
	e.sched.Store(nil)
	if err := e.StopRetention(ctx); err != nil {
		return err
	}
	l.stopLive()
	select {
	case <-l.liveDone:
	case <-ctx.Done():
		return ctx.Err()
	}
	return l.sched.Stop(ctx)
}

// Resume does the work a start owes to the state a crash left: it finishes
// any upgrade sweep cut short (see sweepMachine), and marks offline the
// devices whose streams died with the previous process. Lead calls it; a
// driver that runs the engine without Lead (the simulator) calls it after
// opening the store.
func (e *Engine) Resume(ctx context.Context) error {
	if err := e.sweepUpgrades(ctx); err != nil {
		return err
	}
	return e.offlineDevices(ctx)
}

// OnCommit must receive the store's committed changes (see
// store.CommitHook). It wakes one long-polling Ready per instance that
// became READY, and tells the scheduler each changed instance's due time.
func (e *Engine) OnCommit(changes []fsm.Change) {
	sc := e.sched.Load()
	for i := range changes {
		c := &changes[i]
		// An instance made READY and leased again in the same transaction
		// (a continued TransitionBatch item) wakes no one: a waiter would
		// find it gone.
		if c.ToStatus == fsm.StatusReady && !leasedNext(changes, i) {
			e.wait.wakeOne(c.Machine, c.ToNode)
		}
		if c.Instance != "" && sc != nil {
			// In commit order: the last change of an instance wins.
			sc.Update(c.Instance, c.DueAt, !c.DueAt.IsZero())
		}
		if c.Device != "" && c.Actor != DeviceActor(c.Device) {
			e.devices.wake(c.Device)
		}
	}
}

// leasedNext reports whether the change after changes[i] leases the same
// instance: a continuation appends the lease right after the transition.
func leasedNext(changes []fsm.Change, i int) bool {
	return i+1 < len(changes) && changes[i+1].Instance == changes[i].Instance && changes[i+1].Kind == fsm.ChangeLeased
}

// loadDue returns the whole due index, for the scheduler's heap.
func (e *Engine) loadDue(ctx context.Context) ([]store.Due, error) {
	var all []store.Due
	err := e.st.View(ctx, func(tx store.ReadTx) error {
		var err error
		all, err = tx.Due(store.FromUnixNanos(math.MaxInt64), 0)
		return err
	})
	return all, err
}

// FireDue is the scheduler's Fire: in one transaction, it wakes or expires
// each of ids that the store says is due now, and returns the ones the
// store says are due later. A driver that keeps its own heap of due times
// instead of running the scheduler (the simulator) calls it.
func (e *Engine) FireDue(ctx context.Context, ids []string) ([]store.Due, error) {
	var later []store.Due
	var retries int // by the last run of the update
	err := e.st.Update(ctx, func(tx store.Tx) error {
		later, retries = later[:0], 0
		now := e.clock.Now()
		for _, id := range ids {
			_, d, err := e.dueOne(tx, id, now, &retries)
			if err != nil {
				return err
			}
			if !d.At.IsZero() {
				later = append(later, d)
			}
		}
		return nil
	})
	if err == nil {
		e.retries.Add(uint64(retries))
	}
	return later, err
}

// dueOne re-reads instance id and applies Wake or Expire if it is due at
// now. The store is the truth: an instance gone, no longer due or due
// later (returned in later) is skipped quietly. A lease that expires into a
// retry adds one to *retries.
func (e *Engine) dueOne(tx store.Tx, id string, now time.Time, retries *int) (applied bool, later store.Due, err error) {
	in, err := tx.Instance(id)
	if errors.Is(err, store.ErrNotFound) {
		return false, store.Due{}, nil
	}
	if errors.Is(err, store.ErrCorrupt) {
		// The store logged and counted it; one damaged record must not stop
		// the others in its batch from firing, batch after batch.
		return false, store.Due{}, nil
	}
	if err != nil {
		return false, store.Due{}, fmt.Errorf("due instance %q: %w", id, err)
	}
	at, ok := in.DueTime()
	if !ok {
		return false, store.Due{}, nil
	}
	if at.After(now) {
		return false, store.Due{At: at, ID: id}, nil
	}
	err = e.applyDue(tx, in, now, retries)
	// The core refuses before it writes anything, so a refusal leaves tx
	// clean; a racing change made the instance not due any more.
	if errors.Is(err, fsm.ErrNotDue) || errors.Is(err, fsm.ErrStaleLease) {
		e.log.Debug("due instance skipped", "instance", id, "err", err)
		return false, store.Due{}, nil
	}
	return err == nil, store.Due{}, err
}

// ProcessDue synchronously wakes every WAITING instance and expires every
// lease whose time has come, and returns the next due time (zero when
// nothing is due). The scheduler does this on its own; ProcessDue is for
// tests and tools that drive an engine without Lead.
func (e *Engine) ProcessDue(ctx context.Context) (time.Time, error) {
	for {
		// Look before writing: a read does not queue behind the writer.
		next, err := e.nextDue(ctx)
		if err != nil || next.IsZero() || next.After(e.clock.Now()) {
			return next, err
		}
		var applied, retries int
		err = e.st.Update(ctx, func(tx store.Tx) error {
			applied, retries = 0, 0
			now := e.clock.Now()
			due, err := tx.Due(now, dueBatch)
			if err != nil {
				return err
			}
			for _, d := range due {
				ok, _, err := e.dueOne(tx, d.ID, now, &retries)
				if err != nil {
					return err
				}
				if ok {
					applied++
				}
			}
			return nil
		})
		if err != nil {
			return time.Time{}, err
		}
		e.retries.Add(uint64(retries))
		if applied == 0 { // only skipped entries: looking again finds them again
			return e.nextDue(ctx)
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

func (e *Engine) applyDue(tx store.Tx, in fsm.Instance, now time.Time, retries *int) error {
	m, err := e.machineVersion(tx, in.Machine, in.Version)
	if err != nil {
		return err
	}
	if in.Status == fsm.StatusLeased {
		// A lease timeout is a failed attempt: it counts for the breaker.
		retried, err := e.applyAttempt(tx, m, in, fsm.Expire{Token: in.Lease.Token, Jitter: e.jitter()}, now, SystemActor, nil, nil)
		if retried {
			*retries++
		}
		return err
	}
	return e.apply(tx, m, in, fsm.Wake{}, now, SystemActor, nil)
}

// apply runs the core and writes its result in tx. out, when not nil,
// receives the new instance. An empty actor is the lease's worker: work
// calls are recorded under the worker that holds the lease.
func (e *Engine) apply(tx store.Tx, m *fsm.Machine, in fsm.Instance, ev fsm.Event, now time.Time, actor string, out *fsm.Instance) error {
	return e.applyPrepared(tx, m, in, ev, now, actor, out, nil)
}

// applyPrepared is apply with prepare, when not nil, called on the new
// instance of an event that changed it, before it is written: the place to
// record what else the same call does in the same transaction (see
// TransitionBatch), since a FINAL instance cannot be written twice.
func (e *Engine) applyPrepared(tx store.Tx, m *fsm.Machine, in fsm.Instance, ev fsm.Event, now time.Time, actor string, out *fsm.Instance, prepare func(*fsm.Instance) error) error {
	if actor == "" {
		actor = in.Lease.Worker
	}
	next, changes, err := fsm.Apply(m, in, ev, now)
	if err != nil {
		return err
	}
	if err := checkParamsGrowth(in.Params, next.Params); err != nil {
		return err
	}
	stampDevice(m, next, changes)
	if changes != nil && prepare != nil {
		if err := prepare(&next); err != nil {
			return err
		}
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
	checkDescribed(&in, changes)
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

// checkDescribed asserts that the last change written with an instance
// describes the state written: the changelog is the history of what the
// store holds, and the scheduler learns due times from the changes alone
// (see OnCommit). A mismatch is a bug; it panics with *fsm.InvariantError,
// which fails the one operation in the store's writer.
func checkDescribed(in *fsm.Instance, changes []fsm.Change) {
	if len(changes) == 0 {
		panic(&fsm.InvariantError{Msg: fmt.Sprintf("instance %q written without a change", in.ID)})
	}
	c := &changes[len(changes)-1]
	due, _ := in.DueTime()
	if c.Instance != in.ID || c.ToNode != in.Node || c.ToStatus != in.Status || c.Token != in.Token || !c.DueAt.Equal(due) {
		panic(&fsm.InvariantError{Msg: fmt.Sprintf("instance %q written %s %s token %d due %v; its last change says %q %s %s token %d due %v",
			in.ID, in.Node, in.Status, in.Token, due, c.Instance, c.ToNode, c.ToStatus, c.Token, c.DueAt)})
	}
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
