package changes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// Defaults for Options.
const (
	// DefaultBuffer is the default per-watcher live buffer, in changes.
	DefaultBuffer = 1024
	// DefaultReplayPage is the default number of changes read from the
	// store per read transaction during replay.
	DefaultReplayPage = 512
)

// Log attribute keys.
const (
	logKeyComponent  = "component"
	logKeyResumeFrom = "resume_from"
	logKeyFilter     = "filter"
	logKeyError      = "error"
)

// Options configures a Hub.
type Options struct {
	// Buffer is the per-watcher live buffer: how many published changes a
	// live watcher may have not yet handed to send before it is ended with
	// *LaggingError (a replaying watcher catches up from the store
	// instead). Zero or negative means DefaultBuffer (1024).
	Buffer int
	// ReplayPage is the most changes one store read fetches during replay.
	// A replay starts with pages of 32 and adapts their length so that a
	// page holds about 1 MiB: large changes come a few at a time. Zero or
	// negative means DefaultReplayPage (512).
	ReplayPage int
	// Logger receives the hub's logs; nil discards them.
	Logger *slog.Logger
}

// WithDefaults returns o with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	if o.ReplayPage <= 0 {
		o.ReplayPage = DefaultReplayPage
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// ErrClosed ends every stream when the hub is closed.
var ErrClosed = errors.New("changes: hub closed")

// errLagging is the cause with which Publish ends a live stream whose
// buffer overflowed; the stream turns it into a *LaggingError.
var errLagging = errors.New("changes: watcher lagging")

// LaggingError ends a stream whose watcher fell more than its buffer behind
// the live changelog.
type LaggingError struct {
	// ResumeFrom is the first sequence number the stream did not deliver:
	// streaming again from it, with the same filter, misses nothing. The
	// one change whose send was cut short when the stream ended may have
	// reached the client all the same, so a client resumes from the
	// greater of ResumeFrom and the last seq it received + 1.
	ResumeFrom uint64
}

func (e *LaggingError) Error() string {
	return fmt.Sprintf("changes: watcher fell behind; resume from seq %d", e.ResumeFrom)
}

// OutOfRangeError refuses a stream that starts outside the changelog: after
// head+1 (in the future), or before the oldest change retention kept.
type OutOfRangeError struct {
	// From is the sequence number that cannot be streamed from.
	From uint64
	// Head is the last sequence number committed when the stream started.
	Head uint64
	// Oldest, when From was deleted by retention, is the oldest sequence
	// number the changelog holds (one past its head when retention
	// deleted every change): where a consumer can resume. Zero when From
	// is in the future.
	Oldest uint64
}

// Compacted reports whether From was deleted by retention (rather than
// not yet committed).
func (e *OutOfRangeError) Compacted() bool { return e.Oldest != 0 }

func (e *OutOfRangeError) Error() string {
	if !e.Compacted() {
		return fmt.Sprintf("changes: seq %d is out of range: the changelog ends at %d", e.From, e.Head)
	}
	return fmt.Sprintf("changes: seq %d is out of range: retention deleted it; the oldest change kept is %d", e.From, e.Oldest)
}

// Filter selects changes; empty fields match everything.
type Filter struct {
	// Machine keeps changes of this machine id.
	Machine string
	// Instance keeps changes of this instance id.
	Instance string
	// Device keeps changes that concern this device id (fsm.Change.Device):
	// its own and those of its jobs.
	Device string
}

func (f *Filter) match(c *fsm.Change) bool {
	return (f.Machine == "" || f.Machine == c.Machine) &&
		(f.Instance == "" || f.Instance == c.Instance) &&
		(f.Device == "" || f.Device == c.Device)
}

// Hub fans committed changes out to watchers: replay from the store, then
// tail live. The zero value is not usable; call New.
type Hub struct {
	st   store.Store
	opts Options
	log  *slog.Logger

	// done is closed by Close; closed is cancelled with it, to end the
	// streams' contexts (and so their blocked sends) at once.
	done      chan struct{}
	closed    context.Context
	closeAll  context.CancelFunc
	closeOnce sync.Once

	// mu is held by Publish for a whole call, so that a stream registering
	// under it sees a head such that every later change reaches its queue.
	// Lock order: mu, then watcher.mu.
	mu       sync.Mutex
	watchers []*watcher
	head     uint64
	// synced says head is known: read from the store by New, or set by
	// the first Publish when that read failed.
	synced bool

	// Copies for the stats methods, which must not contend with Publish.
	headStat     atomic.Uint64
	watchersStat atomic.Int64
	// laggedStat counts the streams ended with *LaggingError.
	laggedStat atomic.Uint64
}

// watcher is one stream's live queue.
type watcher struct {
	f    Filter
	wake chan struct{} // capacity 1: "the queue or lagging changed"

	// end cancels the stream's context with a cause: Publish ends a live
	// stream that lags at once, even while it is blocked in send.
	end context.CancelCauseFunc

	mu sync.Mutex
	q  []fsm.Change
	// live is set once the stream has replayed and drains only the queue:
	// from then on an overflow ends it.
	live bool
	// lagFrom is 0 until the queue overflows, then the sequence of the
	// first change dropped (sequences start at 1). Every matching change
	// before it was queued, so once the queue is sent a lagging stream
	// resumes from it (or from its cursor, if the replay read further).
	lagFrom uint64

	// sending counts changes the stream took from q and has not yet
	// handed to send; Publish adds it to len(q) to enforce Buffer.
	sending atomic.Int64
}

// New returns a hub over st, with its head read from st so that the first
// Publish is checked against it. Nothing may commit to st between New and
// installing Publish as st's CommitHook.
func New(st store.Store, opts Options) *Hub {
	opts = opts.WithDefaults()
	h := &Hub{
		st:   st,
		opts: opts,
		log:  opts.Logger.With(logKeyComponent, "changes"),
		done: make(chan struct{}),
	}
	h.closed, h.closeAll = context.WithCancel(context.Background())
	head, err := readHead(context.Background(), st)
	if err != nil {
		// Not fatal: Stream reads the head itself until the first Publish
		// establishes it; only that first Publish goes unchecked.
		h.log.Error("read changelog head", logKeyError, err)
		return h
	}
	h.head, h.synced = head, true
	h.headStat.Store(head)
	return h
}

func readHead(ctx context.Context, st store.Store) (uint64, error) {
	var head uint64
	err := st.View(ctx, func(tx store.ReadTx) error {
		var err error
		head, err = tx.Head()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("read changelog head: %w", err)
	}
	return head, nil
}

// Publish is the store's CommitHook: it receives committed changes in
// sequence order, from one goroutine, and never blocks. It only appends to
// bounded per-watcher queues, and costs one uncontended lock and a sequence
// check per change when there are no watchers. A sequence that is not
// exactly the previous one plus one panics with *fsm.InvariantError.
func (h *Hub) Publish(changes []fsm.Change) {
	if len(changes) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()

	// Validate the whole commit before touching any queue, so a panic
	// leaves the hub as it was.
	prev, synced := h.head, h.synced
	for i := range changes {
		seq := changes[i].Seq
		if synced && seq != prev+1 {
			panic(&fsm.InvariantError{Msg: fmt.Sprintf(
				"changelog gap: published seq %d after %d", seq, prev)})
		}
		prev, synced = seq, true
	}
	h.head, h.synced = prev, true
	h.headStat.Store(prev)

	for _, w := range h.watchers {
		h.offer(w, changes)
	}
}

// Reset follows a jump of the store's changelog that did not come through
// Publish: the state was replaced by a snapshot of the leader's, after
// this server fell too far behind. The head is read again, and every live
// stream ends as a lagging one does (ABORTED with where to resume), so that
// its client replays what it missed from the store.
func (h *Hub) Reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	from := h.head + 1
	head, err := readHead(context.Background(), h.st)
	if err != nil {
		h.log.Error("read changelog head", logKeyError, err)
		h.synced = false
	} else {
		h.head, h.synced = head, true
		h.headStat.Store(head)
	}
	for _, w := range h.watchers {
		w.mu.Lock()
		if w.lagFrom == 0 {
			w.lagFrom = from
		}
		if w.live {
			w.end(errLagging)
			h.laggedStat.Add(1)
		}
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// offer queues the changes w wants. Called with h.mu held.
func (h *Hub) offer(w *watcher, changes []fsm.Change) {
	locked := false
	for i := range changes {
		c := &changes[i]
		if !w.f.match(c) {
			continue
		}
		if !locked {
			w.mu.Lock()
			locked = true
		}
		if w.lagFrom != 0 {
			break
		}
		if len(w.q)+int(w.sending.Load()) >= h.opts.Buffer {
			w.lagFrom = c.Seq
			if w.live {
				// The reader does not keep up (it may have stopped
				// reading, its send blocked on flow control): end it now
				// rather than when a send returns. end only cancels a
				// context; it never blocks.
				w.end(errLagging)
				h.laggedStat.Add(1)
			}
			break
		}
		w.q = append(w.q, *c)
	}
	if !locked {
		return
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// StreamOption configures one Stream call.
type StreamOption func(*streamOptions)

type streamOptions struct {
	stopAtHead   bool
	onRegistered func(head uint64) error
}

// StopAtHead makes Stream end with nil instead of tailing live changes: it
// replays from the store every change with Seq >= from up to the head
// recorded when the stream registered (the head OnRegistered receives),
// calling send for those matching the filter, and returns nil once every
// change through that head has been sent or filtered out, even when the
// last ones do not match. Changes committed after registration are never
// sent. With from == 0 or from == head+1 there is nothing to replay and
// Stream returns nil at once.
//
// Such a stream only reads the store: it has no live queue, so Publish does
// not see it, it cannot lag, and Watchers does not count it.
func StopAtHead() StreamOption {
	return func(o *streamOptions) { o.stopAtHead = true }
}

// OnRegistered makes Stream call fn once the stream is registered and from
// is known to be in range, on the caller's goroutine and before any send,
// with the head at registration: the last sequence number committed then.
// A live stream delivers every matching change after head; a StopAtHead
// stream stops at it. An error from fn ends Stream with that error.
func OnRegistered(fn func(head uint64) error) StreamOption {
	return func(o *streamOptions) { o.onRegistered = fn }
}

// Stream replays the changes with Seq >= from from the store, then delivers
// live ones as they are published, calling send for each change matching f,
// in order, with no gap and no duplicate. from == 0 means "from now": only
// changes committed after the call. from > head+1 is *OutOfRangeError, and so
// is a from that retention has compacted away. opts can make it stop at the
// head instead of tailing (StopAtHead) and report the head (OnRegistered).
//
// Stream returns when ctx ends (ctx.Err()), send fails (its error), the
// watcher falls more than Options.Buffer behind the live changelog
// (*LaggingError telling where to resume), the hub closes (ErrClosed), or,
// with StopAtHead, the head is reached (nil). A live watcher falling behind
// and Close end the stream at once, even while send is blocked (a reader
// that stopped reading): send runs on a goroutine of the stream's, one
// call at a time, and Stream returns without waiting for a blocked one.
// send must therefore return once the call it writes to has ended (a gRPC
// Send does), and must not modify the change's Params, which is shared
// with other watchers.
func (h *Hub) Stream(ctx context.Context, from uint64, f Filter, send func(fsm.Change) error, opts ...StreamOption) error {
	var o streamOptions
	for _, opt := range opts {
		opt(&o)
	}
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(h.closed, func() { cancel(ErrClosed) })()
	var w *watcher // nil for StopAtHead: everything it sends is in the store
	if !o.stopAtHead {
		w = &watcher{f: f, wake: make(chan struct{}, 1), end: cancel}
	}
	upto, err := h.register(ctx, w)
	if err != nil {
		return err
	}
	if w != nil {
		defer h.unregister(w)
	}

	if from == 0 {
		from = upto + 1
	}
	if from > upto+1 {
		return &OutOfRangeError{From: from, Head: upto}
	}
	if o.onRegistered != nil {
		if err := o.onRegistered(upto); err != nil {
			return err
		}
	}
	out := startSender(send)
	defer out.stop()
	s := stream{h: h, w: w, f: f, parent: parent, ctx: ctx, out: out, next: from, stopAtHead: o.stopAtHead}
	if o.stopAtHead {
		return s.replay(upto)
	}
	return s.run(upto)
}

// register adds w to the hub and returns the head at that instant: every
// change after it will reach w's queue. With w nil it only returns the head.
func (h *Hub) register(ctx context.Context, w *watcher) (uint64, error) {
	h.mu.Lock()
	closed, synced := h.isClosed(), h.synced
	h.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	var storeHead uint64
	if !synced {
		// New could not read the head and nothing was published since.
		// Read it now, outside the lock, which Publish must never wait on.
		var err error
		if storeHead, err = readHead(ctx, h.st); err != nil {
			return 0, err
		}
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.isClosed() {
		return 0, ErrClosed
	}
	head := h.head
	if !h.synced {
		// Still nothing published: every commit after storeHead is
		// published later and queued; one at or before it that is
		// published later is queued too and skipped as a duplicate.
		head = storeHead
	}
	if w != nil {
		h.watchers = append(h.watchers, w)
		h.watchersStat.Add(1)
	}
	return head, nil
}

func (h *Hub) unregister(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i := slices.Index(h.watchers, w); i >= 0 {
		last := len(h.watchers) - 1
		h.watchers[i] = h.watchers[last]
		h.watchers[last] = nil
		h.watchers = h.watchers[:last]
		h.watchersStat.Add(-1)
	}
}

func (h *Hub) isClosed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// Close ends every Stream with ErrClosed; later Streams fail with it at
// once. Close is idempotent. Publish keeps checking sequences after Close.
func (h *Hub) Close() {
	h.closeOnce.Do(func() {
		close(h.done)
		h.closeAll()
	})
}

// Watchers returns the number of streams registered with a live queue
// (StopAtHead streams have none).
func (h *Hub) Watchers() int { return int(h.watchersStat.Load()) }

// MaxLag returns the most changes any live watcher has queued and not yet
// sent: how far the slowest subscriber is behind the changelog, in changes
// it wants. A watcher reaching Options.Buffer is ended with *LaggingError.
// It takes the hub's lock briefly: call it at a metrics scrape, not in a
// loop.
func (h *Hub) MaxLag() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	most := 0
	for _, w := range h.watchers {
		w.mu.Lock()
		most = max(most, len(w.q)+int(w.sending.Load()))
		w.mu.Unlock()
	}
	return most
}

// Lagged returns how many streams were ended with *LaggingError since New.
func (h *Hub) Lagged() uint64 { return h.laggedStat.Load() }

// Head returns the last sequence number published (or read from the store
// by New when nothing has been published yet).
func (h *Hub) Head() uint64 { return h.headStat.Load() }
