package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

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
	// Logger receives panics recovered from update functions, commit
	// failures, corrupt records, a damaged meta page and the replacement of
	// the file. Zero: logs are discarded.
	Logger *slog.Logger
	// NoSync skips fsync on commit. UNSAFE: a crash of the machine (not
	// only the process) can lose acknowledged writes or corrupt the file.
	// For benchmarks and throwaway tests only. Zero: every commit syncs.
	NoSync bool
	// Timeout is how long Open waits for the file lock held by another
	// process before it fails with ErrLocked. Zero means DefaultTimeout
	// (1s).
	Timeout time.Duration
	// OnRestore, when set, is called after Restore replaced the state with
	// a snapshot, so that what follows the changelog can start over from
	// the store. Zero: none.
	OnRestore func()
	// OnCorrupt, when set, is called once for every corrupt record met: by
	// the check at Open and by every read that fails on one. It must not
	// block. Zero: none (the store logs them either way).
	OnCorrupt func(err *store.CorruptError)
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

	// file is the identity of the open file; replaced is set, once and for
	// good, when the path no longer names it (see checkReplaced).
	file     fileID
	replaced atomic.Bool
	// fault, when set, fails commits (InjectCommitFault).
	fault atomic.Pointer[func() error]

	// dbMu guards db against its replacement by Restore: everything that
	// uses db holds it for reading.
	dbMu sync.RWMutex
	// log is where Update proposes its write sets (SetProposer); a
	// localLog until then.
	prop atomic.Pointer[proposerBox]
	// applied is the index of the last log entry applied; members the
	// member records (see Members).
	applied atomic.Uint64
	members atomic.Pointer[map[string]string]
	// stuckMu guards stuckErr and stuckCh: stuckErr is why applying
	// entries fails (nil while it works); stuckCh is closed when it
	// starts failing, for the writer waiting on a proposal.
	stuckMu  sync.Mutex
	stuckErr error
	stuckCh  chan struct{}
	// closing is closed by Close, to end Apply's retries.
	closing chan struct{}
	// nextID names the writer's next write set (see writer.go).
	nextID uint64
	// local is the log of a store without a proposer.
	local *localLog
	// inFlight bounds the write sets on their way through the log.
	inFlight int
}

type proposerBox struct{ p store.Proposer }

// SetProposer makes Update propose its write sets to p: the replicated
// log, which applies them through the store's Apply. Call it before the
// first Update; until then a store applies its writes itself.
func (s *Store) SetProposer(p store.Proposer) { s.prop.Store(&proposerBox{p}) }

func (s *Store) proposer() store.Proposer {
	if b := s.prop.Load(); b != nil {
		return b.p
	}
	return s.local
}

// setStuck records whether applying entries fails, and why.
func (s *Store) setStuck(err error) {
	s.stuckMu.Lock()
	defer s.stuckMu.Unlock()
	if err == nil {
		if s.stuckErr != nil {
			s.log.Info("applying the log works again")
		}
		s.stuckErr = nil
		return
	}
	if s.stuckErr == nil {
		close(s.stuckCh)
	}
	s.stuckErr = err
}

// stuck returns why applying entries fails, or nil, and a channel closed
// once it fails.
func (s *Store) stuck() (error, <-chan struct{}) {
	s.stuckMu.Lock()
	defer s.stuckMu.Unlock()
	if s.stuckErr == nil && isClosed(s.stuckCh) {
		s.stuckCh = make(chan struct{})
	}
	return s.stuckErr, s.stuckCh
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// sleepUnlessClosed waits d and reports whether the store is still open.
func (s *Store) sleepUnlessClosed(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.closing:
		return false
	}
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the store at path and starts its writer.
func Open(path string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.WithDefaults()
	s := &Store{
		opts:       opts,
		log:        opts.Logger.With("component", "store.bolt"),
		reqs:       make(chan *request, opts.MaxBatch),
		writerDone: make(chan struct{}),
		stuckCh:    make(chan struct{}),
		closing:    make(chan struct{}),
	}
	// Every error below names the path once: errors from the os package
	// already do, the others say "database PATH".
	if err := s.precheck(path); err != nil {
		return nil, err
	}
	db, err := openDB(path, s.boltOptions())
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("database %s: %w (waited %v)", path, ErrLocked, opts.Timeout)
	}
	if err != nil {
		return nil, err
	}
	s.db = db
	if s.file, err = statID(path); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.initBuckets(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	if err := s.loadReplicated(); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.nextID = randomID()
	s.local = &localLog{s: s}
	s.inFlight = defaultInFlight
	go s.writer()
	return s, nil
}

func (s *Store) boltOptions() *bbolt.Options {
	return &bbolt.Options{
		Timeout: s.opts.Timeout,
		NoSync:  s.opts.NoSync,
		// The freelist is rebuilt by scanning at open instead of being
		// written on every commit, and kept as a map: both make commits of
		// a large file cheaper (etcd does the same).
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	}
}

// openDB opens the file with bbolt. The check before it makes bbolt's
// reads safe; should one still panic or fault on a damaged page, Open
// fails with a *store.CorruptError instead of crashing.
func openDB(path string, o *bbolt.Options) (db *bbolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, &store.CorruptError{Path: path, Reason: fmt.Sprintf("bbolt failed to open it: %v; restore it from a backup", p)}
		}
	}()
	db, err = bbolt.Open(path, 0o600, o)
	var pe *os.PathError
	if err != nil && !errors.As(err, &pe) && !errors.Is(err, bolterrors.ErrTimeout) {
		err = fmt.Errorf("database %s: %w", path, err)
	}
	return db, err
}

// precheck refuses a damaged file before bbolt maps it (see verify.go). A
// missing file is a new database. The check holds a shared lock, so that
// it never reads a file another process is writing.
func (s *Store) precheck(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lockShared(f, s.opts.Timeout); err != nil {
		if errors.Is(err, ErrLocked) {
			return fmt.Errorf("database %s: %w (waited %v)", path, ErrLocked, s.opts.Timeout)
		}
		return fmt.Errorf("database %s: lock: %w", path, err)
	}
	defer func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }()
	began := time.Now()
	c, err := checkFile(f, path, nil)
	if errors.Is(err, errEmpty) {
		return &store.CorruptError{Path: path, Reason: "the file is empty (0 bytes), so it holds no database; " +
			"if the server never started on it (a first start that failed), remove it to start afresh, otherwise restore it from a backup"}
	}
	if err != nil {
		return &store.CorruptError{Path: path, Reason: err.Error() + "; restore it from a backup"}
	}
	if len(c.structural) > 0 {
		return &store.CorruptError{Path: path, Reason: problemList(c.structural) + "; restore it from a backup"}
	}
	if c.metaNote != "" {
		s.log.Error("one meta page of the database is damaged; opened from the other one, which may be one commit older",
			"path", path, "problem", c.metaNote)
	}
	for _, ce := range c.records {
		s.corrupt(ce)
	}
	s.log.Info("database checked", "path", path, "pages", c.pages, "corrupt_records", len(c.records), "took", time.Since(began))
	return nil
}

// lockShared takes a shared flock on f, waiting up to timeout for an
// exclusive holder to let go.
func lockShared(f *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return ErrLocked
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// problemList joins problems into one reason, eliding past a few.
func problemList(ps []string) string {
	if len(ps) > maxProblemsListed {
		ps = append(ps[:maxProblemsListed:maxProblemsListed], fmt.Sprintf("and %d more", len(ps)-maxProblemsListed))
	}
	return strings.Join(ps, "; ")
}

// corrupt logs a corrupt record met and reports it to Options.OnCorrupt.
func (s *Store) corrupt(ce *store.CorruptError) {
	s.log.Error("corrupt record", "path", ce.Path, "bucket", ce.Bucket, "key", string(ce.Key), "reason", ce.Reason)
	if s.opts.OnCorrupt != nil {
		s.opts.OnCorrupt(ce)
	}
}

// noteCorrupt reports err when it is a corrupt record, and returns it.
func (s *Store) noteCorrupt(err error) error {
	if err == nil {
		return nil // without the allocation of ce, on every transaction
	}
	var ce *store.CorruptError
	if errors.As(err, &ce) {
		s.corrupt(ce)
	}
	return err
}

func (s *Store) initBuckets() error {
	sealed := 0
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	err := s.db.Update(func(tx *bbolt.Tx) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = s.bboltPanic(p)
			}
		}()
		indexFinished := tx.Bucket(bucketFinished) == nil && tx.Bucket(bucketInstances) != nil
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		if indexFinished {
			if err := fillFinished(tx); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keySchema); {
		case v == nil:
			if err := meta.Put(keySchema, schemaVersion); err != nil {
				return err
			}
			return meta.Put(keyChecksums, checksumCRC32C)
		case string(v) != string(schemaVersion):
			return fmt.Errorf("schema version %v, this build reads %v", v, schemaVersion)
		}
		switch v := meta.Get(keyChecksums); {
		case v == nil:
			for name := range sealedBuckets {
				sealed += tx.Bucket([]byte(name)).Stats().KeyN
			}
			return sealAll(tx)
		case string(v) != string(checksumCRC32C):
			return fmt.Errorf("record checksum %q, this build reads %q", v, checksumCRC32C)
		}
		return nil
	})
	if err == nil && sealed > 0 {
		s.log.Info("added checksums to the records of a file written by an older version", "path", s.db.Path(), "records", sealed)
	}
	return err
}

// Stats returns the writer's counters.
func (s *Store) Stats() store.Stats {
	st := store.Stats{Commits: s.commits.Load(), Ops: s.ops.Load()}
	if !s.opts.NoSync {
		st.Syncs = 2 * st.Commits
	}
	return st
}

// Backup writes a consistent copy of the whole database file to w, as
// of one read transaction: writers go on meanwhile, and the copy is a
// valid store file that Open accepts. It returns the bytes written and the
// last changelog sequence number in the copy. The read transaction lasts
// as long as w takes: give it a fast writer (a local file), since a long
// one holds back the file's growth.
func (s *Store) Backup(ctx context.Context, w io.Writer) (n int64, head uint64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return 0, 0, store.ErrClosed
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
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
	err   error
	wrote bool // the last run of fn wrote
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
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	err := s.db.View(func(btx *bbolt.Tx) (err error) {
		rt := &readTx{tx: btx}
		defer func() {
			rt.done = true
			if p := recover(); p != nil {
				err = s.bboltPanic(p)
			}
		}()
		return fn(rt)
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return s.noteCorrupt(err)
}

// bboltPanic turns a panic (or a memory fault, with SetPanicOnFault) that
// bbolt raised on a damaged page into a *store.CorruptError. Any other
// panic is a bug of the caller's and goes on. Call it from the deferred
// function that recovered p, while the panicking stack is still there.
func (s *Store) bboltPanic(p any) error {
	stack := debug.Stack()
	if !raisedBy(stack, "go.etcd.io/bbolt.") {
		panic(p)
	}
	s.log.Error("bbolt panicked on a damaged page", "path", s.db.Path(), "panic", p, "stack", string(stack))
	return &store.CorruptError{Path: s.db.Path(), Reason: fmt.Sprintf("bbolt failed reading a page: %v; run dfsmrd check on a backup", p)}
}

// raisedBy reports whether the innermost function below the panic in
// stack (runtime frames aside) is in the package with prefix pkg.
func raisedBy(stack []byte, pkg string) bool {
	_, after, ok := bytes.Cut(stack, []byte("\npanic("))
	if !ok {
		return false
	}
	_, after, _ = bytes.Cut(after, []byte("\n")) // the rest of the panic line
	for line := range bytes.Lines(after) {
		if len(line) == 0 || line[0] == '\t' || bytes.HasPrefix(line, []byte("panic(")) || bytes.HasPrefix(line, []byte("runtime.")) {
			continue
		}
		return bytes.HasPrefix(line, []byte(pkg))
	}
	return false
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
		close(s.closing)
		s.mu.Unlock()
		<-s.writerDone
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// commitTx commits btx. A failure the file system gives a reason for
// (disk full, quota, read-only, I/O error) becomes a *store.IOError.
func (s *Store) commitTx(btx *bbolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			// bbolt met a damaged page while writing (after the file check
			// at open, only damage done since): nothing is acknowledged.
			err = s.bboltPanic(p)
			_ = btx.Rollback()
		}
	}()
	if f := s.fault.Load(); f != nil {
		if err := (*f)(); err != nil {
			_ = btx.Rollback()
			return s.commitError(err)
		}
	}
	if err := btx.Commit(); err != nil {
		return s.commitError(err)
	}
	return nil
}

func (s *Store) commitError(err error) error {
	if ioe := store.ClassifyIOError(s.db.Path(), "commit", err); ioe != nil {
		return ioe
	}
	return fmt.Errorf("store: commit: %w", err)
}

// InjectCommitFault makes every commit call f first and, when f returns an
// error, fail with it as if writing the file had (the transaction is rolled
// back). nil removes the fault. It exists for tests of the layers above,
// which need a full disk or a failing device on demand.
func (s *Store) InjectCommitFault(f func() error) {
	if f == nil {
		s.fault.Store(nil)
		return
	}
	s.fault.Store(&f)
}

func (s *Store) countOp(r *request) {
	if r.err == nil {
		s.ops.Add(1)
	}
}

func (s *Store) finish(r *request, err error) {
	r.err = s.noteCorrupt(err)
	close(r.done)
}

// run runs r.fn once against btx with ov laid over it, recording its
// writes into ov and ws, and
// reports its error and whether it wrote. A panic becomes an error for r
// alone.
func (s *Store) run(btx *bbolt.Tx, ov *overlay, ws *writeSet, r *request) (err error, wrote bool) {
	wt := &writeTx{readTx: readTx{tx: btx, ov: ov}, ws: ws}
	defer func() {
		wt.done = true
		if p := recover(); p != nil {
			if raisedBy(debug.Stack(), "go.etcd.io/bbolt.") {
				// The transaction met a damaged page: roll it back.
				err, wrote = s.bboltPanic(p), true
				return
			}
			stack := debug.Stack()
			s.log.Error("update function panicked", "panic", p, "stack", string(stack))
			if perr, ok := p.(error); ok {
				err = fmt.Errorf("store: update function panicked: %w", perr)
			} else {
				err = fmt.Errorf("store: update function panicked: %v", p)
			}
			wrote = wt.wrote
		}
	}()
	err = r.fn(wt)
	return err, wt.wrote
}
