package changes

import (
	"context"
	"errors"
	"fmt"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// stream is the state of one Stream call, owned by its goroutine.
type stream struct {
	h *Hub
	// w is the live queue, nil for a StopAtHead stream.
	w *watcher
	f Filter
	// parent is the caller's context; ctx is derived from it and also
	// ended by Publish (lagging) and Close, with those causes.
	parent context.Context
	ctx    context.Context
	out    *sender
	// next is the cursor: every matching change with Seq < next has been
	// sent or skipped. Both sources deliver in order, so a change with
	// Seq < next is a duplicate from the replay/live overlap.
	next uint64
	// spare is the previous batch's backing array, reused for the queue.
	spare []fsm.Change
	// pageLimit is the number of changes the next replay read asks for:
	// it starts small and grows to Options.ReplayPage while pages stay
	// under replayPageBytes, and shrinks when changes are large, so that a
	// page of changes with big params does not take hundreds of MiB.
	pageLimit int
	// stopAtHead: replay stops at upto and the stream never goes live.
	stopAtHead bool
}

// run replays from the store through upto, then tails the live queue.
func (s *stream) run(upto uint64) error {
	for {
		if err := s.replay(upto); err != nil {
			return err
		}
		var lagged bool
		upto, lagged = s.resync()
		if !lagged {
			return s.live()
		}
	}
}

// replay sends the store's changelog from s.next through upto. A live
// stream may send further: a page can hold changes committed after upto,
// which the cursor then skips in the live queue.
func (s *stream) replay(upto uint64) error {
	for s.next <= upto {
		if err := s.replayPage(upto); err != nil {
			return err
		}
	}
	return nil
}

// replayPage sends one page of the store's changelog from s.next.
func (s *stream) replayPage(upto uint64) error {
	if err := s.stopped(); err != nil {
		return err
	}
	if s.f.Instance != "" {
		return s.replayHistoryPage(upto)
	}
	var page []fsm.Change
	limit := s.nextPageLimit()
	err := s.h.st.View(s.ctx, func(tx store.ReadTx) error {
		var err error
		if page, err = tx.Changes(s.next, limit); err != nil {
			return err
		}
		// Everything through upto is committed, so a short or late page
		// means retention deleted the range we need.
		if len(page) == 0 || page[0].Seq > s.next {
			return compacted(tx, s.next, upto)
		}
		return nil
	})
	if _, ok := err.(*OutOfRangeError); ok {
		return err
	}
	if err != nil {
		return s.replayErr(err)
	}
	s.sized(page)
	for i := range page {
		c := &page[i]
		if c.Seq != s.next {
			return fmt.Errorf("replay changelog: store returned seq %d, want %d", c.Seq, s.next)
		}
		if s.stopAtHead && c.Seq > upto {
			break // committed after the stream started
		}
		if s.f.match(c) {
			if err := s.send(c); err != nil {
				return err
			}
		}
		s.next = c.Seq + 1
	}
	return nil
}

// replayHistoryPage replays for a stream of one instance: it reads that
// instance's history index instead of the whole changelog, so its cost is
// the instance's changes, not the changelog's.
func (s *stream) replayHistoryPage(upto uint64) error {
	var page []fsm.Change
	limit := s.nextPageLimit()
	err := s.h.st.View(s.ctx, func(tx store.ReadTx) error {
		// Retention: the changelog must still hold s.next, as for an
		// unfiltered replay (one entry read).
		first, err := tx.Changes(s.next, 1)
		if err != nil {
			return err
		}
		if len(first) == 0 || first[0].Seq > s.next {
			return compacted(tx, s.next, upto)
		}
		page, err = tx.HistoryFrom(s.f.Instance, s.next, limit)
		return err
	})
	if _, ok := err.(*OutOfRangeError); ok {
		return err
	}
	if err != nil {
		return s.replayErr(err)
	}
	s.sized(page)
	for i := range page {
		c := &page[i]
		if c.Seq < s.next || c.Instance != s.f.Instance {
			return fmt.Errorf("replay history of %q: store returned seq %d of %q from %d", s.f.Instance, c.Seq, c.Instance, s.next)
		}
		if s.stopAtHead && c.Seq > upto {
			s.next = upto + 1
			return nil // committed after the stream started
		}
		if s.f.match(c) {
			if err := s.send(c); err != nil {
				return err
			}
		}
		s.next = c.Seq + 1
	}
	if len(page) < limit {
		// The history holds every change of the instance through upto.
		s.next = max(s.next, upto+1)
	}
	return nil
}

// compacted is the error of a replay that found from deleted by
// retention: it names the oldest change the changelog holds, read in the
// same snapshot.
func compacted(tx store.ReadTx, from, upto uint64) error {
	oldest, ok, err := tx.OldestChange()
	if err != nil {
		return err
	}
	if !ok {
		head, err := tx.Head()
		if err != nil {
			return err
		}
		oldest = head + 1
	}
	return &OutOfRangeError{From: from, Head: upto, Oldest: oldest}
}

// Replay page sizing: a page starts at firstPageLimit changes and adapts
// so that it holds about replayPageBytes.
const (
	firstPageLimit  = 32
	replayPageBytes = 1 << 20
)

func (s *stream) nextPageLimit() int {
	if s.pageLimit == 0 {
		s.pageLimit = min(firstPageLimit, s.h.opts.ReplayPage)
	}
	return s.pageLimit
}

// sized adapts the next page's limit to the size of page.
func (s *stream) sized(page []fsm.Change) {
	size := 0
	for i := range page {
		size += changeBytes(&page[i])
	}
	switch {
	case size > replayPageBytes:
		s.pageLimit = max(1, len(page)*replayPageBytes/size)
	case size < replayPageBytes/2 && len(page) == s.pageLimit:
		s.pageLimit = min(2*s.pageLimit, s.h.opts.ReplayPage)
	}
}

// changeBytes estimates the memory of a change: its strings and params,
// and the struct.
func changeBytes(c *fsm.Change) int {
	n := 256 + len(c.Actor) + len(c.Instance) + len(c.Machine) + len(c.Transition) +
		len(c.FromNode) + len(c.ToNode) + len(c.Reason) + len(c.Device)
	for k, v := range c.Params {
		n += len(k) + len(v) + 32
	}
	return n
}

// replayErr wraps a failed replay read, or says why the stream ended.
func (s *stream) replayErr(err error) error {
	if s.ctx.Err() != nil {
		return s.stopErr()
	}
	return fmt.Errorf("replay changelog from seq %d: %w", s.next, err)
}

// resync ends a replay. If the live queue overflowed while the stream was
// reading history, the dropped changes are all in the store: it clears the
// queue and returns the hub's current head as the new replay target, which
// is consistent because Publish holds h.mu for a whole call.
func (s *stream) resync() (upto uint64, lagged bool) {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if s.w.lagFrom == 0 {
		s.w.live = true
		return 0, false
	}
	clear(s.w.q)
	s.w.q = s.w.q[:0]
	s.w.lagFrom = 0
	return s.h.head, true
}

// live drains the queue until the stream ends.
func (s *stream) live() error {
	for {
		if err := s.stopped(); err != nil {
			return err
		}
		batch, lagFrom := s.take()
		if lagFrom != 0 {
			// Publish ended the stream's context as it marked it.
			return s.stopErr()
		}
		if len(batch) == 0 {
			select {
			case <-s.ctx.Done():
				return s.stopErr()
			case <-s.w.wake:
			}
			continue
		}
		for i := range batch {
			c := &batch[i]
			if c.Seq >= s.next {
				if err := s.send(c); err != nil {
					return err
				}
			}
			s.w.sending.Add(-1)
		}
		// Drop the references so the spare array does not pin old
		// changes' strings and params.
		clear(batch)
		s.spare = batch[:0]
	}
}

// take swaps the queue for the spare array and returns what was queued, and
// where the watcher lagged (0 if it did not).
func (s *stream) take() (batch []fsm.Change, lagFrom uint64) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	batch, lagFrom = s.w.q, s.w.lagFrom
	if len(batch) > 0 {
		s.w.q = s.spare
		s.spare = nil
		s.w.sending.Store(int64(len(batch)))
	}
	return batch, lagFrom
}

// send hands c to the sender and moves the cursor past it once sent.
func (s *stream) send(c *fsm.Change) error {
	if err := s.out.send(s.ctx, *c); err != nil {
		if s.ctx.Err() != nil {
			return s.stopErr()
		}
		return err
	}
	s.next = c.Seq + 1
	return nil
}

// stopped reports why the stream must end now, if it must.
func (s *stream) stopped() error {
	if s.ctx.Err() != nil {
		return s.stopErr()
	}
	return nil
}

// stopErr says why the stream's context ended: the watcher lagged, the hub
// closed, or the caller's context ended.
func (s *stream) stopErr() error {
	switch cause := context.Cause(s.ctx); {
	case errors.Is(cause, errLagging):
		// Every matching change before next was sent, and every later one
		// is in the store: resuming from next misses nothing. A change
		// whose send was cut short counts as not sent, though it may have
		// reached the client; a client resumes from its last seq + 1 when
		// that is greater.
		s.h.log.Info("watcher lagging", logKeyResumeFrom, s.next, logKeyFilter, s.f)
		return &LaggingError{ResumeFrom: s.next}
	case errors.Is(cause, ErrClosed):
		return ErrClosed
	}
	if err := s.parent.Err(); err != nil {
		return err
	}
	return s.ctx.Err()
}

// sender runs a stream's send on a goroutine of its own, one change at a
// time, so that a send blocked on a reader that stopped reading cannot hold
// the stream: the stream waits for send or for its context, whichever
// comes first, and a blocked send is abandoned. It returns once the call it
// writes to has ended (the stream's end ends it), and the goroutine exits.
type sender struct {
	changes chan fsm.Change
	errs    chan error
}

func startSender(send func(fsm.Change) error) *sender {
	s := &sender{changes: make(chan fsm.Change), errs: make(chan error, 1)}
	go func() {
		for c := range s.changes {
			s.errs <- send(c)
		}
	}()
	return s
}

// send sends c, or returns ctx.Err() when ctx ends first.
func (s *sender) send(ctx context.Context, c fsm.Change) error {
	select {
	case s.changes <- c:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-s.errs:
		return err
	case <-ctx.Done():
		select {
		case err := <-s.errs: // it finished too: count it
			return err
		default:
			return ctx.Err()
		}
	}
}

// stop lets the goroutine exit once its current send, if any, returns.
func (s *sender) stop() { close(s.changes) }
