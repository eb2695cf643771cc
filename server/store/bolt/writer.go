package bolt

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"github.com/dfsmr/dfsmr/server/store"
)

// The writer runs every Update. It takes what is queued, up to MaxBatch
// requests, runs their functions together on a read transaction with an
// overlay that takes their writes (see overlay.go), and submits what they
// wrote to the log as one write set; their callers return once it
// applied.
//
// It does not wait for a write set to apply before it computes the next:
// up to defaultInFlight write sets are on their way through the log at once,
// and the next is computed with the writes of those still on their way
// laid over the state applied so far. Each write set names the one it was
// computed after (its predecessor, by a random 64-bit id), and Apply
// refuses, on every server alike, a write set whose predecessor is not the
// last write set applied (errStale): a write set computed by a leader that
// was deposed meanwhile, or one computed after a write set that was
// refused. The writer then computes it again (at most maxStale times).

// defaultInFlight is how many write sets the writer has on their way
// through the log at once (Store.inFlight; 1 turns pipelining off, which
// the benchmark of the writer compares against).
const defaultInFlight = 2

// maxStale bounds how often one batch is computed again because another
// leader's write applied first.
const maxStale = 5

// errMoved says that the applied state is not on the writer's chain of
// write sets: something else applied (a new leader's write, a restored
// snapshot).
var errMoved = errors.New("store: the applied state moved off the writer's write sets")

// proposal is one write set on its way through the log.
type proposal struct {
	// live are the requests whose writes ws holds (and those that only
	// read); failed are those that wrote and then failed, whose writes
	// were left out. All are answered once ws applied: what they read
	// includes the write sets in flight before it.
	live, failed []*request
	ws           *writeSet
	prev, id     uint64
	attempts     int
	began        time.Time
	done         chan struct{}
	err          error // set before done is closed
}

// randomID returns a random write set id, never 0 (the predecessor of the
// first write set of a new file).
func randomID() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

func (s *Store) newID() uint64 {
	s.nextID++
	if s.nextID == 0 {
		s.nextID++
	}
	return s.nextID
}

func (s *Store) writer() {
	defer close(s.writerDone)
	// A fault on a damaged page becomes a panic that run recovers.
	debug.SetPanicOnFault(true)
	batch := make([]*request, 0, s.opts.MaxBatch)
	var flight []*proposal
	reqs := s.reqs
	for reqs != nil || len(flight) > 0 {
		var head chan struct{}
		if len(flight) > 0 {
			head = flight[0].done
		}
		in := reqs
		if len(flight) >= s.inFlight || len(flight) > 0 && len(s.reqs) < s.opts.MaxBatch/4 {
			// A batch computed while another is in flight when few
			// requests wait would be small: more, smaller commits cost
			// more than the wait for the one in flight.
			in = nil
		}
		select {
		case r, ok := <-in:
			if !ok {
				reqs = nil
				continue
			}
			batch = append(batch[:0], r)
			// The callers of the last batch were just woken and many of
			// them are about to queue their next update: yielding once
			// lets them.
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
			flight = s.start(s.claim(batch), 0, flight)
			clear(batch) // let finished requests be collected
		case <-head:
			flight = s.settle(flight)
		}
	}
}

// claim returns the requests of batch whose callers still wait.
func (s *Store) claim(batch []*request) []*request {
	var live []*request
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
	return live
}

// start computes the write set of live on top of flight and submits it,
// returning flight with it added. A batch that wrote nothing is answered
// at once when it read only the applied state, else once flight applied.
func (s *Store) start(live []*request, attempts int, flight []*proposal) []*proposal {
	for len(live) > 0 {
		var failed []*request
		ws, prev, wrote, err := s.compute(&live, &failed, flight)
		if testHookComputed != nil {
			testHookComputed(wrote, len(flight))
		}
		if errors.Is(err, errMoved) {
			flight = s.drain(flight)
			live = append(live, failed...)
			continue
		}
		if err != nil {
			for _, r := range append(live, failed...) {
				s.finish(r, err)
			}
			return flight
		}
		if !wrote {
			if len(flight) > 0 {
				// What they read includes write sets not applied yet,
				// which may still be refused: read again once they
				// settled.
				flight = s.drain(flight)
				live = append(live, failed...)
				continue
			}
			s.answer(live, failed)
			return flight
		}
		p := &proposal{live: live, failed: failed, ws: ws, prev: prev, id: s.newID(), attempts: attempts,
			began: time.Now(), done: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		wait := s.proposer().Submit(ctx, writeCommand(p.prev, p.id, ws))
		go func() {
			defer cancel()
			p.err = s.await(wait)
			close(p.done)
		}()
		return append(flight, p)
	}
	return flight
}

// testHookComputed, when set by a test, learns of every batch computed:
// whether it wrote, and how many write sets were in flight.
var testHookComputed func(wrote bool, inFlight int)

// answer finishes requests with the outcome of their last run.
func (s *Store) answer(live, failed []*request) {
	for _, r := range live {
		s.countOp(r)
		s.finish(r, r.err)
	}
	for _, r := range failed {
		s.finish(r, r.err)
	}
}

// settle finishes flight[0], which is done, and returns what is still in
// flight. A write set that failed fails every one after it (each was
// computed on it): settle waits for them all, then computes again, in
// order, those refused as stale.
func (s *Store) settle(flight []*proposal) []*proposal {
	p := flight[0]
	if p.err == nil {
		s.succeeded(p)
		return flight[1:]
	}
	for _, q := range flight {
		<-q.done
	}
	var out []*proposal
	for _, q := range flight {
		switch {
		case q.err == nil:
			s.succeeded(q)
		case errors.Is(q.err, errStale) && q.attempts < maxStale:
			out = s.start(append(q.live, q.failed...), q.attempts+1, out)
		default:
			for _, r := range append(q.live, q.failed...) {
				if r.err == nil {
					r.err = q.err
				}
				s.finish(r, r.err)
			}
		}
	}
	return out
}

// drain settles everything in flight.
func (s *Store) drain(flight []*proposal) []*proposal {
	for len(flight) > 0 {
		<-flight[0].done
		flight = s.settle(flight)
	}
	return flight
}

func (s *Store) succeeded(p *proposal) {
	if s.opts.CommitObserver != nil {
		s.opts.CommitObserver(len(p.live), time.Since(p.began))
	}
	s.answer(p.live, p.failed)
}

// compute runs the functions of *live on a read transaction with an
// overlay holding the write sets of flight, and returns the write set of
// what they wrote, its predecessor and whether they wrote. Requests that
// wrote and then failed move from *live to *failed.
func (s *Store) compute(live, failed *[]*request, flight []*proposal) (ws *writeSet, prev uint64, wrote bool, err error) {
	if err, _ := s.stuck(); err != nil {
		return nil, 0, false, err
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if err := s.checkReplaced(); err != nil {
		return nil, 0, false, err
	}
	for len(*live) > 0 {
		btx, err := s.db.Begin(false)
		if err != nil {
			s.log.Error("begin transaction", "err", err)
			return nil, 0, false, fmt.Errorf("store: begin transaction: %w", err)
		}
		prev = getUint(btx.Bucket(bucketMeta), keyLastWrite)
		ov := newOverlay()
		if len(flight) > 0 {
			// The applied state is somewhere on the chain of flight; the
			// write sets it already holds are laid over it again, which
			// changes nothing (every write says what a key or sequence
			// becomes).
			if prev != flight[0].prev && !slices.ContainsFunc(flight, func(p *proposal) bool { return p.id == prev }) {
				_ = btx.Rollback()
				return nil, 0, false, errMoved
			}
			for _, p := range flight {
				if err := ov.load(btx, p.ws.buf); err != nil {
					_ = btx.Rollback()
					return nil, 0, false, err
				}
			}
			prev = flight[len(flight)-1].id
		}
		ws = &writeSet{}
		dirty := -1 // index of a request that wrote and failed
		wrote = false
		for i, r := range *live {
			r.err, r.wrote = s.run(btx, ov, ws, r)
			if r.err != nil && r.wrote {
				dirty = i
				break
			}
			wrote = wrote || r.wrote
		}
		_ = btx.Rollback()
		if dirty >= 0 {
			*failed = append(*failed, (*live)[dirty])
			*live = slices.Delete(*live, dirty, dirty+1)
			continue
		}
		return ws, prev, wrote, nil
	}
	return nil, 0, false, nil
}

// await waits for a submitted write set to apply, or for applying entries
// to start failing (disk full, say): then the write set is in the log and
// applies once the cause is gone, and its callers get that error now.
func (s *Store) await(wait func() error) error {
	_, stuckCh := s.stuck()
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		return err
	case <-stuckCh:
		err, _ := s.stuck()
		if err == nil {
			return <-done
		}
		var ioe *store.IOError
		if errors.As(err, &ioe) {
			pending := *ioe
			pending.Pending = true
			return &pending
		}
		return fmt.Errorf("%w (the write is in the log and is applied once that is resolved)", err)
	}
}
