package bolt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// Defaults of Options.
const (
	// DefaultMaxBatch is the default of Options.MaxBatch.
	DefaultMaxBatch = 256
	// DefaultTimeout is the default of Options.Timeout.
	DefaultTimeout = time.Second
)

// ErrLocked is returned by Open when another process holds the file.
var ErrLocked = errors.New("database is locked by another process")

// Options configure Open. The zero value is ready to use.
type Options struct {
	// CommitHook, when set, receives the changes of every committed
	// transaction in sequence order, after the commit is durable and before
	// the Update calls of that transaction return. It runs on the writer
	// goroutine: it must not block and must not call the store. Zero: none.
	CommitHook store.CommitHook
	// CommitObserver, when set, is called on the writer goroutine after
	// every durable commit with the number of Update calls the commit
	// made durable and how long the commit took (page writes and fsync).
	// It must not block. Zero: none.
	CommitObserver func(ops int, took time.Duration)
	// MaxBatch is the most Update calls that share one transaction.
	// Zero means DefaultMaxBatch (256); 1 disables group commit.
	MaxBatch int
	// Logger receives panics recovered from update functions and commit
	// failures. Zero: logs are discarded.
	Logger *slog.Logger
	// NoSync skips fsync on commit. UNSAFE: a crash of the machine (not
	// only the process) can lose acknowledged writes or corrupt the file.
	// For benchmarks and throwaway tests only. Zero: every commit syncs.
	NoSync bool
	// Timeout is how long Open waits for the file lock held by another
	// process before it fails with ErrLocked. Zero means DefaultTimeout
	// (1s).
	Timeout time.Duration
}

// WithDefaults returns o with zero fields set to their defaults.
func (o Options) WithDefaults() Options {
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports an option out of range.
func (o Options) Validate() error {
	if o.MaxBatch < 0 {
		return fmt.Errorf("bolt: MaxBatch %d is negative", o.MaxBatch)
	}
	if o.Timeout < 0 {
		return fmt.Errorf("bolt: Timeout %v is negative", o.Timeout)
	}
	return nil
}

// Stats count the work of the writer since Open.
type Stats struct {
	// Commits is the number of write transactions committed.
	Commits uint64
	// Ops is the number of Update calls that committed successfully.
	Ops uint64
	// Syncs is the number of fsyncs (fdatasync) of the file by commits:
	// bbolt syncs twice per write transaction, once for the data pages and
	// once for the meta page that makes them live; none with NoSync.
	Syncs uint64
}

// Store is a store.Store backed by one bbolt file. It is safe for
// concurrent use.
type Store struct {
	db   *bbolt.DB
	opts Options
	log  *slog.Logger

	// mu guards closed against the close of reqs: senders hold it for
	// reading, Close for writing.
	mu     sync.RWMutex
	closed bool
	reqs   chan *request

	writerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error

	commits atomic.Uint64
	ops     atomic.Uint64
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the store at path and starts its writer.
func Open(path string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.WithDefaults()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: opts.Timeout,
		NoSync:  opts.NoSync,
		// The freelist is rebuilt by scanning at open instead of being
		// written on every commit, and kept as a map: both make commits of
		// a large file cheaper (etcd does the same).
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w (waited %v)", path, ErrLocked, opts.Timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := initBuckets(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{
		db:         db,
		opts:       opts,
		log:        opts.Logger.With("component", "store.bolt"),
		reqs:       make(chan *request, opts.MaxBatch),
		writerDone: make(chan struct{}),
	}
	go s.writer()
	return s, nil
}

func initBuckets(db *bbolt.DB) error {
	return db.Update(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keySchema); {
		case v == nil:
			return meta.Put(keySchema, schemaVersion)
		case string(v) != string(schemaVersion):
			return fmt.Errorf("schema version %v, this build reads %v", v, schemaVersion)
		}
		return nil
	})
}

// Stats returns the writer's counters.
func (s *Store) Stats() Stats {
	st := Stats{Commits: s.commits.Load(), Ops: s.ops.Load()}
	if !s.opts.NoSync {
		st.Syncs = 2 * st.Commits
	}
	return st
}

// Snapshot writes a consistent copy of the whole database file to w, as
// of one read transaction: writers go on meanwhile, and the copy is a
// valid store file that Open accepts. It returns the bytes written and the
// last changelog sequence number in the copy. The read transaction lasts
// as long as w takes: give it a fast writer (a local file), since a long
// one holds back the file's growth.
func (s *Store) Snapshot(ctx context.Context, w io.Writer) (n int64, head uint64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return 0, 0, store.ErrClosed
	}
	err = s.db.View(func(tx *bbolt.Tx) error {
		if head, err = (&readTx{tx: tx}).Head(); err != nil {
			return err
		}
		n, err = tx.WriteTo(ctxWriter{ctx, w})
		return err
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return n, 0, store.ErrClosed
	}
	return n, head, err
}

// ctxWriter stops a long copy once its context ends.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// Path returns the file the store is in.
func (s *Store) Path() string { return s.db.Path() }

// Request states: the caller may abandon a queued request when its context
// ends; once the writer claims it, the caller waits for the outcome.
const (
	stateQueued int32 = iota
	stateClaimed
	stateAbandoned
)

type request struct {
	ctx   context.Context
	fn    func(store.Tx) error
	state atomic.Int32
	done  chan struct{}

	// Set by the writer before done is closed.
	err     error
	changes []fsm.Change // appended by the last run of fn
	wrote   bool         // the last run of fn wrote
}

// Update implements store.Store. fn must not call the store: it runs on the
// writer goroutine, so a nested Update or View would deadlock.
func (s *Store) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &request{ctx: ctx, fn: fn, done: make(chan struct{})}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return store.ErrClosed
	}
	select {
	case s.reqs <- r:
		s.mu.RUnlock()
	case <-ctx.Done(): // the queue is full and the caller gave up
		s.mu.RUnlock()
		return ctx.Err()
	}

	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(stateQueued, stateAbandoned) {
			return ctx.Err()
		}
		// Already running: the outcome is decided by the commit.
		<-r.done
		return r.err
	}
}

// View implements store.Store. Views run concurrently with each other and
// with the writer.
func (s *Store) View(ctx context.Context, fn func(tx store.ReadTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return store.ErrClosed
	}
	err := s.db.View(func(btx *bbolt.Tx) error {
		rt := &readTx{tx: btx}
		defer func() { rt.done = true }()
		return fn(rt)
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return err
}

// Close stops accepting updates (they fail with store.ErrClosed), commits
// the ones already queued, stops the writer and closes the file. It is
// idempotent and safe to call concurrently; every call returns the result
// of the first.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.reqs)
		s.mu.Unlock()
		<-s.writerDone
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// writer owns every write transaction. It takes what is queued, up to
// MaxBatch, and commits it as one transaction; it never waits for more.
func (s *Store) writer() {
	defer close(s.writerDone)
	batch := make([]*request, 0, s.opts.MaxBatch)
	for r := range s.reqs {
		batch = append(batch[:0], r)
		// The callers of the last batch were just woken and many of them
		// are about to queue their next update: yielding once lets them
		// (it costs microseconds next to a millisecond fsync, and nothing
		// when no one else is runnable).
		runtime.Gosched()
	fill:
		for len(batch) < s.opts.MaxBatch {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.commit(batch)
		clear(batch) // let finished requests be collected
	}
}

// commit runs the functions of batch in one transaction and commits it.
//
// A function that fails without writing just gets its error. One that
// writes and then fails (or panics) has left the transaction dirty: the
// transaction is rolled back and the batch rerun without it. Every rerun
// drops a request, so this ends.
func (s *Store) commit(batch []*request) {
	live := batch[:0:0]
	for _, r := range batch {
		if !r.state.CompareAndSwap(stateQueued, stateClaimed) {
			continue // abandoned: its caller has returned
		}
		if err := r.ctx.Err(); err != nil {
			s.finish(r, err)
			continue
		}
		live = append(live, r)
	}

	for len(live) > 0 {
		btx, err := s.db.Begin(true)
		if err != nil {
			s.log.Error("begin write transaction", "err", err)
			for _, r := range live {
				s.finish(r, fmt.Errorf("store: begin transaction: %w", err))
			}
			return
		}
		dirty := -1 // index of a request that wrote and failed
		wrote := false
		for i, r := range live {
			r.err, r.changes, r.wrote = s.run(btx, r)
			if r.err != nil && r.wrote {
				dirty = i
				break
			}
			wrote = wrote || r.wrote
		}
		if dirty >= 0 {
			_ = btx.Rollback()
			s.finish(live[dirty], live[dirty].err)
			live = slices.Delete(live, dirty, dirty+1)
			continue
		}

		if !wrote {
			// Reads and failures only: nothing to make durable.
			_ = btx.Rollback()
			for _, r := range live {
				s.countOp(r)
				s.finish(r, r.err)
			}
			return
		}
		began := time.Now()
		if err := btx.Commit(); err != nil {
			s.log.Error("commit", "err", err, "ops", len(live))
			err = fmt.Errorf("store: commit: %w", err)
			for _, r := range live {
				if r.err == nil {
					r.err = err
				}
				s.finish(r, r.err)
			}
			return
		}
		s.commits.Add(1)
		if s.opts.CommitObserver != nil {
			s.opts.CommitObserver(len(live), time.Since(began))
		}
		if s.opts.CommitHook != nil {
			var changes []fsm.Change
			for _, r := range live {
				if r.err == nil {
					changes = append(changes, r.changes...)
				}
			}
			if len(changes) > 0 {
				s.opts.CommitHook(changes)
			}
		}
		for _, r := range live {
			s.countOp(r)
			s.finish(r, r.err)
		}
		return
	}
}

func (s *Store) countOp(r *request) {
	if r.err == nil {
		s.ops.Add(1)
	}
}

func (s *Store) finish(r *request, err error) {
	r.err = err
	close(r.done)
}

// run runs r.fn once against btx and reports its error, the changes it
// appended and whether it wrote. A panic becomes an error for r alone.
func (s *Store) run(btx *bbolt.Tx, r *request) (err error, changes []fsm.Change, wrote bool) {
	wt := &writeTx{readTx: readTx{tx: btx}}
	defer func() {
		wt.done = true
		if p := recover(); p != nil {
			stack := debug.Stack()
			s.log.Error("update function panicked", "panic", p, "stack", string(stack))
			if perr, ok := p.(error); ok {
				err = fmt.Errorf("store: update function panicked: %w", perr)
			} else {
				err = fmt.Errorf("store: update function panicked: %v", p)
			}
			changes, wrote = nil, wt.wrote
		}
	}()
	err = r.fn(wt)
	return err, wt.changes, wt.wrote
}
