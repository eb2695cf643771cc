package changes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// errStop ends a test stream once it has what it wants.
var errStop = errors.New("stop")

var errNotImplemented = errors.New("not implemented in fake")

// fakeStore is just enough of a store.Store for the hub: a changelog that
// Update appends to and View reads. Like the real store, Update calls the
// hook on the writer goroutine after the commit is visible to readers and
// before the next commit.
type fakeStore struct {
	writeMu sync.Mutex // one writer at a time, hook included
	hook    store.CommitHook

	mu  sync.RWMutex
	log []fsm.Change // log[i].Seq == i+1
	// compactedBefore hides changes with a lower Seq, like retention.
	compactedBefore uint64
	// failViews makes the next failViews calls to View fail.
	failViews int
	// read counts the changes Changes and HistoryFrom returned, like the
	// entries a real store visits; maxRead is the most one call returned.
	read, maxRead atomic.Int64

	// hold delays the hook: commits are visible but unpublished until
	// releaseHeld, as on a real store between commit and hook.
	hold bool
	held [][]fsm.Change
}

func (s *fakeStore) holdHooks() {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.hold = true
}

func (s *fakeStore) releaseHeld() {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	for _, cs := range s.held {
		s.hook(cs)
	}
	s.hold, s.held = false, nil
}

func newFakeStore(tb testing.TB, prefill []fsm.Change) *fakeStore {
	tb.Helper()
	s := &fakeStore{}
	commit(tb, s, prefill...)
	return s
}

func (s *fakeStore) setHook(h store.CommitHook) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.hook = h
}

func (s *fakeStore) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.RLock()
	tx := &fakeTx{s: s}
	err := fn(tx)
	s.mu.RUnlock()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.log = append(s.log, tx.pending...)
	s.mu.Unlock()
	switch {
	case s.hook == nil || len(tx.pending) == 0:
	case s.hold:
		s.held = append(s.held, tx.pending)
	default:
		s.hook(tx.pending)
	}
	return nil
}

func (s *fakeStore) View(ctx context.Context, fn func(tx store.ReadTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.failViews > 0 {
		s.failViews--
		return errors.New("fake view failure")
	}
	return fn(&fakeTx{s: s})
}

func (s *fakeStore) Close() error { return nil }

func (s *fakeStore) counted(n int) {
	s.read.Add(int64(n))
	for {
		m := s.maxRead.Load()
		if int64(n) <= m || s.maxRead.CompareAndSwap(m, int64(n)) {
			return
		}
	}
}

// fakeTx reads the committed log plus its own pending appends. The caller
// holds s.mu for reading.
type fakeTx struct {
	s       *fakeStore
	pending []fsm.Change
}

func (tx *fakeTx) Changes(from uint64, limit int) ([]fsm.Change, error) {
	from = max(from, tx.s.compactedBefore, 1)
	var out []fsm.Change
	for _, src := range [][]fsm.Change{tx.s.log, tx.pending} {
		for _, c := range src {
			if c.Seq >= from && len(out) < limit {
				out = append(out, c)
			}
		}
	}
	tx.s.counted(len(out))
	return out, nil
}

func (tx *fakeTx) Head() (uint64, error) {
	return uint64(len(tx.s.log) + len(tx.pending)), nil
}

func (tx *fakeTx) OldestChange() (uint64, bool, error) {
	head, _ := tx.Head()
	oldest := max(tx.s.compactedBefore, 1)
	return oldest, oldest <= head, nil
}

func (tx *fakeTx) Finished(time.Time, int) ([]string, error) { return nil, errNotImplemented }
func (tx *fakeTx) TrimChanges(uint64, time.Time, int) (int, error) {
	return 0, errNotImplemented
}
func (tx *fakeTx) DeleteInstance(string) error { return errNotImplemented }

func (tx *fakeTx) AppendChange(c fsm.Change) (uint64, error) {
	head, _ := tx.Head()
	c.Seq = head + 1
	tx.pending = append(tx.pending, c)
	return c.Seq, nil
}

func (tx *fakeTx) Machine(string, uint32) (store.MachineRecord, error) {
	return store.MachineRecord{}, errNotImplemented
}

func (tx *fakeTx) LatestMachineVersion(string) (uint32, error) {
	return 0, errNotImplemented
}

func (tx *fakeTx) MachineVersions(string) ([]store.MachineRecord, error) {
	return nil, errNotImplemented
}

func (tx *fakeTx) Machines(string, int) ([]store.MachineRecord, error) {
	return nil, errNotImplemented
}
func (tx *fakeTx) Instance(string) (fsm.Instance, error) { return fsm.Instance{}, errNotImplemented }
func (tx *fakeTx) Instances(store.InstanceFilter, string, int) ([]fsm.Instance, error) {
	return nil, errNotImplemented
}
func (tx *fakeTx) History(string) ([]fsm.Change, error) { return nil, errNotImplemented }
func (tx *fakeTx) HistoryFrom(id string, from uint64, limit int) ([]fsm.Change, error) {
	from = max(from, tx.s.compactedBefore, 1)
	var out []fsm.Change
	for _, src := range [][]fsm.Change{tx.s.log, tx.pending} {
		for _, c := range src {
			if c.Instance == id && c.Seq >= from && (limit == 0 || len(out) < limit) {
				out = append(out, c)
			}
		}
	}
	tx.s.counted(len(out))
	return out, nil
}
func (tx *fakeTx) Ready(store.ReadyFilter, int) ([]string, error) {
	return nil, errNotImplemented
}
func (tx *fakeTx) Due(time.Time, int) ([]store.Due, error) { return nil, errNotImplemented }
func (tx *fakeTx) NextDue() (store.Due, bool, error)       { return store.Due{}, false, errNotImplemented }
func (tx *fakeTx) PutMachine(store.MachineRecord) error    { return errNotImplemented }
func (tx *fakeTx) PutInstance(fsm.Instance) error          { return errNotImplemented }
func (tx *fakeTx) DurationSamples(string, uint32, string) ([]time.Duration, error) {
	return nil, errNotImplemented
}
func (tx *fakeTx) AddDurationSample(string, uint32, string, time.Duration) error {
	return errNotImplemented
}
func (tx *fakeTx) Breaker(string) (fsm.Breaker, error)  { return fsm.Breaker{}, errNotImplemented }
func (tx *fakeTx) PutBreaker(string, fsm.Breaker) error { return errNotImplemented }
func (tx *fakeTx) Device(string) (fsm.Device, error)    { return fsm.Device{}, errNotImplemented }
func (tx *fakeTx) Devices(string, string, int) ([]fsm.Device, error) {
	return nil, errNotImplemented
}
func (tx *fakeTx) QueueHead(string) (store.QueueEntry, bool, error) {
	return store.QueueEntry{}, false, errNotImplemented
}
func (tx *fakeTx) QueueLen(string) (int, error)           { return 0, errNotImplemented }
func (tx *fakeTx) PutDevice(fsm.Device) error             { return errNotImplemented }
func (tx *fakeTx) Enqueue(string, store.QueueEntry) error { return errNotImplemented }
func (tx *fakeTx) Dequeue(string, store.QueueEntry) error { return errNotImplemented }

var _ store.Store = (*fakeStore)(nil)

// commit appends cs to the changelog in one transaction (one Publish).
func commit(tb testing.TB, s *fakeStore, cs ...fsm.Change) {
	tb.Helper()
	err := s.Update(context.Background(), func(tx store.Tx) error {
		for _, c := range cs {
			if _, err := tx.AppendChange(c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("commit: %v", err)
	}
}

// change returns an unnumbered change of machine m and instance in.
func change(m, in string) fsm.Change {
	return fsm.Change{Kind: fsm.ChangeTransitioned, Machine: m, Instance: in, Params: map[string]string{"k": "v"}}
}

// mixed returns n changes spread over machines a, b, c and instances i0..i3.
func mixed(n int) []fsm.Change {
	cs := make([]fsm.Change, n)
	for i := range cs {
		cs[i] = change(string(rune('a'+i%3)), fmt.Sprintf("i%d", i%4))
	}
	return cs
}

// mustHub returns a hub over s installed as its commit hook.
func mustHub(tb testing.TB, s *fakeStore, opts Options) *Hub {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(tbWriter{tb}, nil))
	}
	h := New(s, opts)
	s.setHook(h.Publish)
	tb.Cleanup(h.Close)
	return h
}

// tbWriter sends logs to tb.Log.
type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(string(p))
	return len(p), nil
}

// collector records the sequences a stream sends and stops it at last.
type collector struct {
	mu   sync.Mutex
	seqs []uint64
	last uint64 // 0: never stop
}

func (c *collector) send(ch fsm.Change) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seqs = append(c.seqs, ch.Seq)
	if ch.Seq == c.last {
		return errStop
	}
	return nil
}

func (c *collector) got() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seqs)
}

// seqRange returns from..to.
func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func checkSeqs(tb testing.TB, got, want []uint64) {
	tb.Helper()
	if !slices.Equal(got, want) {
		tb.Fatalf("sequences:\n got %v\nwant %v", got, want)
	}
}

// streamAsync runs Stream on its own goroutine; the result arrives on the
// returned channel.
func streamAsync(ctx context.Context, h *Hub, from uint64, f Filter, send func(fsm.Change) error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- h.Stream(ctx, from, f, send) }()
	return done
}

func TestReplay(t *testing.T) {
	st := newFakeStore(t, mixed(100))
	h := mustHub(t, st, Options{ReplayPage: 7})
	for _, from := range []uint64{1, 37, 99, 100} {
		t.Run(fmt.Sprint(from), func(t *testing.T) {
			c := &collector{last: 100}
			if err := h.Stream(t.Context(), from, Filter{}, c.send); !errors.Is(err, errStop) {
				t.Fatalf("Stream: %v", err)
			}
			checkSeqs(t, c.got(), seqRange(from, 100))
			if n := h.Watchers(); n != 0 {
				t.Fatalf("Watchers() = %d after the stream ended", n)
			}
		})
	}
}

func TestLiveFromNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore(t, mixed(10))
		h := mustHub(t, st, Options{})
		c := &collector{last: 15}
		done := streamAsync(t.Context(), h, 0, Filter{}, c.send)
		synctest.Wait()
		if n := h.Watchers(); n != 1 {
			t.Fatalf("Watchers() = %d, want 1", n)
		}
		commit(t, st, mixed(2)...)
		commit(t, st, mixed(3)...) // a group commit
		if err := <-done; !errors.Is(err, errStop) {
			t.Fatalf("Stream: %v", err)
		}
		checkSeqs(t, c.got(), seqRange(11, 15))
		if h.Head() != 15 {
			t.Fatalf("Head() = %d, want 15", h.Head())
		}
	})
}

func TestFromHeadPlusOneIsLive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore(t, mixed(10))
		h := mustHub(t, st, Options{})
		c := &collector{last: 11}
		done := streamAsync(t.Context(), h, 11, Filter{}, c.send)
		synctest.Wait()
		commit(t, st, mixed(1)...)
		if err := <-done; !errors.Is(err, errStop) {
			t.Fatalf("Stream: %v", err)
		}
		checkSeqs(t, c.got(), []uint64{11})
	})
}

// TestPublishDuringReplay commits from inside send, that is between two
// store reads of the replay, so the new changes are both in the live queue
// and in later replay pages: each must arrive exactly once.
func TestPublishDuringReplay(t *testing.T) {
	for _, tc := range []struct {
		name      string
		buffer    int
		perSend   int
		sends     int
		prefilled int
	}{
		{name: "fits", buffer: 0, perSend: 1, sends: 20, prefilled: 10},
		// The queue overflows while replaying: the stream resyncs from
		// the store instead of lagging.
		{name: "overflows", buffer: 2, perSend: 3, sends: 5, prefilled: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// In a bubble, a gap shows as a deadlock rather than a hang.
			synctest.Test(t, func(t *testing.T) {
				st := newFakeStore(t, mixed(tc.prefilled))
				h := mustHub(t, st, Options{Buffer: tc.buffer, ReplayPage: 3})
				last := uint64(tc.prefilled + tc.perSend*tc.sends)
				c := &collector{last: last}
				sends := 0
				err := h.Stream(t.Context(), 1, Filter{}, func(ch fsm.Change) error {
					if sends < tc.sends {
						sends++
						commit(t, st, mixed(tc.perSend)...)
					}
					return c.send(ch)
				})
				if !errors.Is(err, errStop) {
					t.Fatalf("Stream: %v", err)
				}
				checkSeqs(t, c.got(), seqRange(1, last))
			})
		})
	}
}

// TestReplayRacesLive publishes from another goroutine while streams replay,
// many times over, and checks every stream sees exactly 1..N. With a tiny
// buffer streams also lag and resume, which must not change what they see.
func TestReplayRacesLive(t *testing.T) {
	const iterations, prefilled, published = 200, 20, 100
	const last = prefilled + published
	for _, buffer := range []int{0, 2} {
		t.Run(fmt.Sprintf("buffer=%d", buffer), func(t *testing.T) {
			var lags int
			for i := range iterations {
				// In a bubble, a gap shows as a deadlock rather than a hang.
				synctest.Test(t, func(t *testing.T) {
					rng := rand.New(rand.NewPCG(uint64(i), 1))
					st := newFakeStore(t, mixed(prefilled))
					h := mustHub(t, st, Options{Buffer: buffer, ReplayPage: 1 + rng.IntN(5)})

					var wg sync.WaitGroup
					wg.Go(func() {
						for n := 0; n < published; {
							k := min(1+rng.IntN(4), published-n)
							commit(t, st, mixed(k)...)
							n += k
						}
					})

					c := &collector{last: last}
					// A lagging stream ends while a send may be under way;
					// that change may arrive, and arrive again on the resumed
					// stream. A client drops what it has seen, once per lag
					// at most.
					var (
						mu        sync.Mutex
						seen, dup uint64
					)
					send := func(ch fsm.Change) error {
						mu.Lock()
						if ch.Seq <= seen {
							dup++
							mu.Unlock()
							return nil
						}
						seen = ch.Seq
						mu.Unlock()
						return c.send(ch)
					}
					from, lagged := uint64(1), uint64(0)
					for {
						err := h.Stream(t.Context(), from, Filter{}, send)
						if lagErr, ok := errors.AsType[*LaggingError](err); ok {
							lags++
							lagged++
							mu.Lock()
							from = max(lagErr.ResumeFrom, seen+1)
							mu.Unlock()
							continue
						}
						if !errors.Is(err, errStop) {
							t.Fatalf("iteration %d: Stream: %v", i, err)
						}
						break
					}
					wg.Wait()
					checkSeqs(t, c.got(), seqRange(1, last))
					mu.Lock()
					defer mu.Unlock()
					if dup > lagged {
						t.Fatalf("iteration %d: %d changes repeated over %d lags", i, dup, lagged)
					}
				})
			}
			t.Logf("%d lags over %d iterations", lags, iterations)
		})
	}
}

func TestFilter(t *testing.T) {
	all := mixed(60)
	for i := range all {
		all[i].Seq = uint64(i + 1)
	}
	for _, f := range []Filter{
		{Machine: "a"},
		{Instance: "i2"},
		{Machine: "b", Instance: "i1"},
		{Machine: "nope"},
	} {
		t.Run(fmt.Sprintf("%+v", f), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := newFakeStore(t, mixed(60))
				h := mustHub(t, st, Options{ReplayPage: 4})
				ctx, cancel := context.WithCancel(t.Context())
				c := &collector{}
				done := streamAsync(ctx, h, 1, f, c.send)
				synctest.Wait() // replayed, now live
				commit(t, st, mixed(60)...)
				synctest.Wait()
				cancel()
				if err := <-done; !errors.Is(err, context.Canceled) {
					t.Fatalf("Stream: %v", err)
				}
				var want []uint64
				for _, ch := range append(all, all...) {
					if f.match(&ch) {
						want = append(want, ch.Seq)
					}
				}
				for i := len(want) / 2; i < len(want); i++ {
					want[i] += 60
				}
				checkSeqs(t, c.got(), want)
			})
		})
	}
}

// TestFilteredWatcherNotLagging floods one commit with another machine's
// changes: a filtered watcher must not lag for changes it does not want,
// while an unfiltered one with the same buffer does.
func TestFilteredWatcherNotLagging(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore(t, nil)
		h := mustHub(t, st, Options{Buffer: 4})
		ctx, cancel := context.WithCancel(t.Context())
		filtered := &collector{}
		filteredDone := streamAsync(ctx, h, 0, Filter{Machine: "a"}, filtered.send)
		all := &collector{}
		allDone := streamAsync(ctx, h, 0, Filter{}, all.send)
		synctest.Wait()

		flood := make([]fsm.Change, 50)
		for i := range flood {
			flood[i] = change("b", "x")
		}
		commit(t, st, flood...)
		commit(t, st, change("a", "y"))
		synctest.Wait()

		// The flood overflowed the unfiltered watcher's buffer inside one
		// Publish: it ends at once, before sending the queued 1..4, and
		// resumes from 1.
		err := <-allDone
		if lagErr, ok := errors.AsType[*LaggingError](err); !ok || lagErr.ResumeFrom != 1 {
			t.Fatalf("unfiltered Stream: %v, want LaggingError resuming from 1", err)
		}
		checkSeqs(t, all.got(), nil)

		checkSeqs(t, filtered.got(), []uint64{51})
		select {
		case err := <-filteredDone:
			t.Fatalf("filtered stream ended: %v", err)
		default:
		}
		cancel()
		if err := <-filteredDone; !errors.Is(err, context.Canceled) {
			t.Fatalf("filtered Stream: %v", err)
		}
	})
}

// TestSlowWatcher blocks one watcher in send, like a gRPC Send on a client
// that stopped reading: Publish must not wait for it, another watcher must
// see everything, and the slow one must end lagging as soon as its buffer
// overflows, while its send is still blocked, with Lagged counting it.
// Resuming from ResumeFrom must deliver exactly the rest.
func TestSlowWatcher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const buffer, total = 8, 100
		st := newFakeStore(t, nil)
		h := mustHub(t, st, Options{Buffer: buffer})

		release := make(chan struct{})
		slow := &collector{}
		slowDone := streamAsync(t.Context(), h, 0, Filter{}, func(ch fsm.Change) error {
			if ch.Seq == 1 {
				<-release // the transport ends the call: the change is not sent
				return errors.New("stream ended")
			}
			return slow.send(ch)
		})
		fast := &collector{last: total}
		fastDone := streamAsync(t.Context(), h, 0, Filter{}, fast.send)
		synctest.Wait()

		for i := range total {
			// Returns although the slow watcher is stuck: a blocked
			// Publish would deadlock the bubble and fail the test.
			commit(t, st, change("m", "i"))
			synctest.Wait()
			if i == buffer-1 {
				// Seq 1 is in send and 2..8 are queued: full, not lagging.
				if lag, lagged := h.MaxLag(), h.Lagged(); lag != buffer || lagged != 0 {
					t.Fatalf("stuck watcher: MaxLag %d, Lagged %d; want %d, 0", lag, lagged, buffer)
				}
			}
		}
		if err := <-fastDone; !errors.Is(err, errStop) {
			t.Fatalf("fast Stream: %v", err)
		}
		checkSeqs(t, fast.got(), seqRange(1, total))

		// Seq 9 overflowed the buffer: the stream ended then, its send of
		// seq 1 still blocked.
		var err error
		select {
		case err = <-slowDone:
		default:
			t.Fatal("the lagging stream still runs while its send is blocked")
		}
		if lag, lagged := h.MaxLag(), h.Lagged(); lag != 0 || lagged != 1 {
			t.Fatalf("after the lagging end: MaxLag %d, Lagged %d; want 0, 1", lag, lagged)
		}
		lagErr, ok := errors.AsType[*LaggingError](err)
		// Seq 1 was never sent.
		if !ok || lagErr.ResumeFrom != 1 {
			t.Fatalf("slow Stream: %v, want LaggingError resuming from 1", err)
		}
		close(release)

		slow.last = total
		if err := h.Stream(t.Context(), lagErr.ResumeFrom, Filter{}, slow.send); !errors.Is(err, errStop) {
			t.Fatalf("resumed Stream: %v", err)
		}
		checkSeqs(t, slow.got(), seqRange(1, total))
	})
}

// TestLaggingFilteredResume checks ResumeFrom under a filter: resuming skips
// nothing the filter wants and repeats nothing.
func TestLaggingFilteredResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore(t, nil)
		h := mustHub(t, st, Options{Buffer: 2})
		release := make(chan struct{})
		c := &collector{}
		done := streamAsync(t.Context(), h, 0, Filter{Machine: "a"}, func(ch fsm.Change) error {
			if ch.Seq == 4 {
				<-release
				return errors.New("stream ended")
			}
			return c.send(ch)
		})
		synctest.Wait()
		commit(t, st, mixed(3)...) // a at 1
		synctest.Wait()
		commit(t, st, mixed(27)...) // a at 4, 7, 10, ...: 4 blocks, 7 and 10 fill the buffer
		err := <-done
		close(release)
		lagErr, ok := errors.AsType[*LaggingError](err)
		if !ok || lagErr.ResumeFrom != 2 {
			t.Fatalf("Stream: %v, want LaggingError resuming from 2", err)
		}
		c.last = 28
		if err := h.Stream(t.Context(), lagErr.ResumeFrom, Filter{Machine: "a"}, c.send); !errors.Is(err, errStop) {
			t.Fatalf("resumed Stream: %v", err)
		}
		checkSeqs(t, c.got(), []uint64{1, 4, 7, 10, 13, 16, 19, 22, 25, 28})
	})
}

// TestLaggingAfterReplayReadAhead: the replay can read changes that are
// committed but not yet published; if the watcher then lags on them, it must
// resume after what it sent, not from the first dropped change.
func TestLaggingAfterReplayReadAhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore(t, mixed(2))
		h := mustHub(t, st, Options{Buffer: 2})
		st.holdHooks()
		commit(t, st, mixed(3)...) // 3..5: in the store, not published
		c := &collector{}
		done := streamAsync(t.Context(), h, 1, Filter{}, c.send)
		synctest.Wait() // replayed 1..5, now live with a cursor of 6
		checkSeqs(t, c.got(), seqRange(1, 5))

		st.releaseHeld() // queues 3 and 4, drops 5
		err := <-done
		if lagErr, ok := errors.AsType[*LaggingError](err); !ok || lagErr.ResumeFrom != 6 {
			t.Fatalf("Stream: %v, want LaggingError resuming from 6", err)
		}
		checkSeqs(t, c.got(), seqRange(1, 5))
	})
}

func TestOutOfRange(t *testing.T) {
	st := newFakeStore(t, mixed(10))
	h := mustHub(t, st, Options{})
	err := h.Stream(t.Context(), 12, Filter{}, func(fsm.Change) error { return nil })
	rangeErr, ok := errors.AsType[*OutOfRangeError](err)
	if !ok || *rangeErr != (OutOfRangeError{From: 12, Head: 10}) {
		t.Fatalf("Stream(12): %v, want OutOfRangeError{12, 10}", err)
	}
	if h.Watchers() != 0 {
		t.Fatalf("Watchers() = %d after a refused stream", h.Watchers())
	}

	// Retention compacted 1..4: resuming inside the window works, before
	// it is out of range.
	st.compactedBefore = 5
	err = h.Stream(t.Context(), 3, Filter{}, func(fsm.Change) error { return nil })
	rangeErr, ok = errors.AsType[*OutOfRangeError](err)
	if !ok || *rangeErr != (OutOfRangeError{From: 3, Head: 10, Oldest: 5}) {
		t.Fatalf("Stream(3) after compaction: %v, want OutOfRangeError{3, 10, oldest 5}", err)
	}
	c := &collector{last: 10}
	if err := h.Stream(t.Context(), 5, Filter{}, c.send); !errors.Is(err, errStop) {
		t.Fatalf("Stream(5) after compaction: %v", err)
	}
	checkSeqs(t, c.got(), seqRange(5, 10))
}

func TestCancel(t *testing.T) {
	t.Run("live", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := newFakeStore(t, mixed(3))
			h := mustHub(t, st, Options{})
			ctx, cancel := context.WithCancel(t.Context())
			done := streamAsync(ctx, h, 1, Filter{}, func(fsm.Change) error { return nil })
			synctest.Wait()
			if n := h.Watchers(); n != 1 {
				t.Fatalf("Watchers() = %d, want 1", n)
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("Stream: %v", err)
			}
			if n := h.Watchers(); n != 0 {
				t.Fatalf("Watchers() = %d after cancel, want 0", n)
			}
		})
	})
	t.Run("replay", func(t *testing.T) {
		st := newFakeStore(t, mixed(10))
		h := mustHub(t, st, Options{ReplayPage: 2})
		ctx, cancel := context.WithCancel(t.Context())
		err := h.Stream(ctx, 1, Filter{}, func(fsm.Change) error {
			cancel()
			return nil
		})
		if err != context.Canceled {
			t.Fatalf("Stream: %v, want exactly context.Canceled", err)
		}
		if n := h.Watchers(); n != 0 {
			t.Fatalf("Watchers() = %d after cancel, want 0", n)
		}
	})
}

func TestSendError(t *testing.T) {
	st := newFakeStore(t, mixed(3))
	h := mustHub(t, st, Options{})
	errBoom := errors.New("boom")
	if err := h.Stream(t.Context(), 1, Filter{}, func(fsm.Change) error { return errBoom }); err != errBoom {
		t.Fatalf("Stream: %v, want the send error", err)
	}
	if n := h.Watchers(); n != 0 {
		t.Fatalf("Watchers() = %d, want 0", n)
	}
}

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore(t, mixed(5))
		h := mustHub(t, st, Options{})
		noop := func(fsm.Change) error { return nil }
		a := streamAsync(t.Context(), h, 0, Filter{}, noop)
		b := streamAsync(t.Context(), h, 1, Filter{Machine: "a"}, noop)
		synctest.Wait()
		if n := h.Watchers(); n != 2 {
			t.Fatalf("Watchers() = %d, want 2", n)
		}
		h.Close()
		for _, done := range []<-chan error{a, b} {
			if err := <-done; !errors.Is(err, ErrClosed) {
				t.Fatalf("Stream: %v, want ErrClosed", err)
			}
		}
		h.Close() // idempotent
		if err := h.Stream(t.Context(), 0, Filter{}, noop); !errors.Is(err, ErrClosed) {
			t.Fatalf("Stream after Close: %v, want ErrClosed", err)
		}
		if n := h.Watchers(); n != 0 {
			t.Fatalf("Watchers() = %d after Close, want 0", n)
		}
		commit(t, st, mixed(1)...) // publishing after Close is fine
	})
}

func TestPublishGapPanics(t *testing.T) {
	mustPanic := func(t *testing.T, h *Hub, seqs ...uint64) {
		t.Helper()
		cs := make([]fsm.Change, len(seqs))
		for i, s := range seqs {
			cs[i].Seq = s
		}
		defer func() {
			t.Helper()
			if _, ok := recover().(*fsm.InvariantError); !ok {
				t.Fatalf("Publish%v did not panic with an InvariantError", seqs)
			}
		}()
		h.Publish(cs)
	}
	st := newFakeStore(t, mixed(5))
	h := mustHub(t, st, Options{})
	// The head comes from the store, so even the first Publish is checked.
	mustPanic(t, h, 1)
	mustPanic(t, h, 7)
	mustPanic(t, h, 5)
	mustPanic(t, h, 6, 8) // a gap inside one group commit
	if h.Head() != 5 {
		t.Fatalf("Head() = %d after refused publishes, want 5", h.Head())
	}
	h.Publish([]fsm.Change{{Seq: 6}, {Seq: 7}})
	mustPanic(t, h, 9)
	if h.Head() != 7 {
		t.Fatalf("Head() = %d, want 7", h.Head())
	}
}

// TestHeadUnknownAtNew: when New cannot read the head, streams read it
// themselves and the first Publish establishes it.
func TestHeadUnknownAtNew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore(t, mixed(5))
		st.failViews = 1
		h := mustHub(t, st, Options{})
		if h.Head() != 0 {
			t.Fatalf("Head() = %d, want 0 while unknown", h.Head())
		}
		err := h.Stream(t.Context(), 8, Filter{}, func(fsm.Change) error { return nil })
		if _, ok := errors.AsType[*OutOfRangeError](err); !ok {
			t.Fatalf("Stream(8): %v, want OutOfRangeError", err)
		}
		c := &collector{last: 7}
		done := streamAsync(t.Context(), h, 3, Filter{}, c.send)
		synctest.Wait()
		commit(t, st, mixed(2)...)
		if err := <-done; !errors.Is(err, errStop) {
			t.Fatalf("Stream: %v", err)
		}
		checkSeqs(t, c.got(), seqRange(3, 7))
		if h.Head() != 7 {
			t.Fatalf("Head() = %d, want 7", h.Head())
		}
	})
}

// BenchmarkPublish measures one Publish of one change with 0, 1 and 100
// watchers that want it, and 100 that filter it out. Watchers drain
// concurrently; every batch of publishes stays within their buffer and the
// clock stops while they catch up, so no watcher lags and the count holds.
func BenchmarkPublish(b *testing.B) {
	const batch = DefaultBuffer / 4
	for _, bc := range []struct {
		name     string
		watchers int
		filter   Filter
	}{
		{"watchers=0", 0, Filter{}},
		{"watchers=1", 1, Filter{}},
		{"watchers=100", 100, Filter{}},
		{"watchers=100/nomatch", 100, Filter{Machine: "other"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			st := newFakeStore(b, nil)
			h := New(st, Options{Logger: slog.New(slog.DiscardHandler)})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// Each matching watcher calls drained.Done when it has sent
			// target, the last change of the batch.
			var target atomic.Uint64
			var drained sync.WaitGroup
			waitFor := 0
			if bc.filter == (Filter{}) {
				waitFor = bc.watchers
			}
			errs := make(chan error, bc.watchers)
			for range bc.watchers {
				go func() {
					errs <- h.Stream(ctx, 0, bc.filter, func(c fsm.Change) error {
						if c.Seq == target.Load() {
							drained.Done()
						}
						return nil
					})
				}()
			}
			for h.Watchers() < bc.watchers {
				runtime.Gosched() // registration is asynchronous
			}

			cs := []fsm.Change{change("m", "i")}
			seq := uint64(0)
			b.ReportAllocs()
			for b.Loop() {
				if seq%batch == 0 {
					drained.Add(waitFor)
					target.Store(seq + batch)
				}
				seq++
				cs[0].Seq = seq
				h.Publish(cs)
				if seq%batch == 0 {
					b.StopTimer()
					drained.Wait()
					b.StartTimer()
				}
			}
			b.StopTimer()
			if seq%batch != 0 {
				// The last batch is short: finish it so target is reached.
				for ; seq%batch != 0; seq++ {
					cs[0].Seq = seq + 1
					h.Publish(cs)
				}
				drained.Wait()
			}
			if h.Watchers() != bc.watchers {
				b.Fatalf("%d watchers left of %d: some lagged", h.Watchers(), bc.watchers)
			}
			cancel()
			for range bc.watchers {
				if err := <-errs; !errors.Is(err, context.Canceled) {
					b.Fatalf("Stream: %v", err)
				}
			}
		})
	}
}

// stopAtHead runs a StopAtHead stream and returns the head OnRegistered
// reported (-1 if it was not called), the seqs sent and the error.
func stopAtHead(t *testing.T, h *Hub, from uint64, f Filter, send func(fsm.Change) error) (head int64, seqs []uint64, err error) {
	t.Helper()
	head = -1
	c := &collector{}
	err = h.Stream(t.Context(), from, f, func(ch fsm.Change) error {
		if head < 0 {
			t.Errorf("change %d sent before OnRegistered", ch.Seq)
		}
		if send != nil {
			if err := send(ch); err != nil {
				return err
			}
		}
		return c.send(ch)
	}, StopAtHead(), OnRegistered(func(hd uint64) error {
		if head >= 0 {
			t.Errorf("OnRegistered called twice")
		}
		head = int64(hd)
		return nil
	}))
	return head, c.got(), err
}

func TestStopAtHead(t *testing.T) {
	t.Run("replay", func(t *testing.T) {
		st := newFakeStore(t, mixed(20))
		h := mustHub(t, st, Options{ReplayPage: 3})
		for _, from := range []uint64{1, 7, 20} {
			head, seqs, err := stopAtHead(t, h, from, Filter{}, func(fsm.Change) error {
				if n := h.Watchers(); n != 0 {
					t.Errorf("Watchers() = %d during a StopAtHead stream", n)
				}
				return nil
			})
			if err != nil || head != 20 {
				t.Fatalf("Stream(%d) = %v with head %d, want nil with head 20", from, err, head)
			}
			checkSeqs(t, seqs, seqRange(from, 20))
		}
	})
	t.Run("filter", func(t *testing.T) {
		st := newFakeStore(t, mixed(20)) // machine a at 1, 4, ..., 19
		h := mustHub(t, st, Options{ReplayPage: 4})
		for _, tc := range []struct {
			f    Filter
			want []uint64
		}{
			// The last change, 20, does not match: the stream still ends.
			{Filter{Machine: "a"}, []uint64{1, 4, 7, 10, 13, 16, 19}},
			{Filter{Machine: "b", Instance: "i1"}, []uint64{2, 14}},
			{Filter{Machine: "nope"}, nil},
		} {
			head, seqs, err := stopAtHead(t, h, 1, tc.f, nil)
			if err != nil || head != 20 {
				t.Fatalf("Stream(%+v) = %v with head %d, want nil with head 20", tc.f, err, head)
			}
			checkSeqs(t, seqs, tc.want)
		}
	})
	t.Run("publishing", func(t *testing.T) {
		// Changes committed while the stream replays, from send (between
		// two pages) and from another goroutine, are after the head
		// recorded at registration: none is sent, and a tiny buffer does
		// not matter since there is no live queue.
		synctest.Test(t, func(t *testing.T) {
			st := newFakeStore(t, mixed(10))
			h := mustHub(t, st, Options{Buffer: 1, ReplayPage: 2})
			var wg sync.WaitGroup
			wg.Go(func() {
				for range 20 {
					commit(t, st, mixed(2)...)
				}
			})
			head, seqs, err := stopAtHead(t, h, 1, Filter{}, func(fsm.Change) error {
				commit(t, st, mixed(3)...)
				return nil
			})
			wg.Wait()
			if err != nil || head < 10 {
				t.Fatalf("Stream = %v with head %d, want nil with head >= 10", err, head)
			}
			checkSeqs(t, seqs, seqRange(1, uint64(head)))
			if h.Head() <= uint64(head) {
				t.Fatalf("nothing committed after the head: Head() = %d", h.Head())
			}
		})
	})
	t.Run("unpublished", func(t *testing.T) {
		// 11..13 are in the store but not published yet: the head is 10
		// and the replay, which reads them in its page, stops at 10.
		st := newFakeStore(t, mixed(10))
		h := mustHub(t, st, Options{})
		st.holdHooks()
		commit(t, st, mixed(3)...)
		head, seqs, err := stopAtHead(t, h, 5, Filter{}, nil)
		if err != nil || head != 10 {
			t.Fatalf("Stream = %v with head %d, want nil with head 10", err, head)
		}
		checkSeqs(t, seqs, seqRange(5, 10))
		st.releaseHeld()
	})
	t.Run("nothing to replay", func(t *testing.T) {
		st := newFakeStore(t, mixed(10))
		h := mustHub(t, st, Options{})
		for _, from := range []uint64{0, 11} {
			head, seqs, err := stopAtHead(t, h, from, Filter{}, nil)
			if err != nil || head != 10 || len(seqs) != 0 {
				t.Fatalf("Stream(%d) = %v with head %d and %v, want nil with head 10 and nothing", from, err, head, seqs)
			}
		}
		empty := mustHub(t, newFakeStore(t, nil), Options{})
		for _, from := range []uint64{0, 1} {
			head, seqs, err := stopAtHead(t, empty, from, Filter{}, nil)
			if err != nil || head != 0 || len(seqs) != 0 {
				t.Fatalf("empty Stream(%d) = %v with head %d and %v, want nil with head 0 and nothing", from, err, head, seqs)
			}
		}
	})
	t.Run("out of range", func(t *testing.T) {
		st := newFakeStore(t, mixed(10))
		h := mustHub(t, st, Options{})
		head, _, err := stopAtHead(t, h, 12, Filter{}, nil)
		if rangeErr, ok := errors.AsType[*OutOfRangeError](err); !ok || *rangeErr != (OutOfRangeError{From: 12, Head: 10}) {
			t.Fatalf("Stream(12): %v, want OutOfRangeError{12, 10}", err)
		}
		if head != -1 {
			t.Fatalf("OnRegistered called for a refused stream")
		}
		st.compactedBefore = 5
		_, _, err = stopAtHead(t, h, 3, Filter{}, nil)
		if rangeErr, ok := errors.AsType[*OutOfRangeError](err); !ok || *rangeErr != (OutOfRangeError{From: 3, Head: 10, Oldest: 5}) {
			t.Fatalf("Stream(3) after compaction: %v, want OutOfRangeError{3, 10, oldest 5}", err)
		}
	})
	t.Run("ends early", func(t *testing.T) {
		st := newFakeStore(t, mixed(10))
		h := mustHub(t, st, Options{ReplayPage: 2})
		if _, seqs, err := stopAtHead(t, h, 1, Filter{}, func(ch fsm.Change) error {
			if ch.Seq == 4 {
				return errStop
			}
			return nil
		}); !errors.Is(err, errStop) || len(seqs) != 3 {
			t.Fatalf("Stream = %v after %v, want the send error after 1..3", err, seqs)
		}
		h.Close()
		if _, _, err := stopAtHead(t, h, 1, Filter{}, nil); !errors.Is(err, ErrClosed) {
			t.Fatalf("Stream after Close = %v, want ErrClosed", err)
		}
	})
}

// TestOnRegistered: a live stream reports the head before sending, and an
// error from the callback ends the stream.
func TestOnRegistered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore(t, mixed(5))
		h := mustHub(t, st, Options{})
		registered := make(chan uint64, 1)
		c := &collector{last: 7}
		done := make(chan error, 1)
		go func() {
			done <- h.Stream(t.Context(), 0, Filter{}, c.send, OnRegistered(func(head uint64) error {
				registered <- head
				return nil
			}))
		}()
		if head := <-registered; head != 5 {
			t.Fatalf("OnRegistered(%d), want 5", head)
		}
		commit(t, st, mixed(2)...)
		if err := <-done; !errors.Is(err, errStop) {
			t.Fatalf("Stream: %v", err)
		}
		checkSeqs(t, c.got(), seqRange(6, 7))

		errBoom := errors.New("boom")
		err := h.Stream(t.Context(), 1, Filter{}, func(fsm.Change) error {
			t.Fatal("sent after OnRegistered failed")
			return nil
		}, OnRegistered(func(uint64) error { return errBoom }))
		if err != errBoom {
			t.Fatalf("Stream = %v, want OnRegistered's error", err)
		}
		if n := h.Watchers(); n != 0 {
			t.Fatalf("Watchers() = %d, want 0", n)
		}
	})
}

// TestInstanceReplayReadsHistory replays one instance out of a changelog
// of 2,005 changes: the stream reads that instance's history, not the
// whole log, and still delivers exactly its changes, then goes live, and
// refuses a compacted start like any replay.
func TestInstanceReplayReadsHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var prefill []fsm.Change
		var want []uint64
		for i := range 2000 {
			if i%400 == 7 {
				prefill = append(prefill, change("m", "x"))
				want = append(want, uint64(len(prefill)))
			}
			prefill = append(prefill, change("m", fmt.Sprint("other-", i%10)))
		}
		st := newFakeStore(t, prefill)
		h := mustHub(t, st, Options{ReplayPage: 2})

		st.read.Store(0)
		c := &collector{}
		if err := h.Stream(t.Context(), 1, Filter{Instance: "x"}, c.send, StopAtHead()); err != nil {
			t.Fatalf("Stream: %v", err)
		}
		checkSeqs(t, c.got(), want)
		// The history's 5 changes, and one changelog entry per page to
		// check retention.
		if n := st.read.Load(); n > 10 {
			t.Fatalf("replaying 5 changes of x read %d changes of %d", n, len(prefill))
		}

		// Live after the replay, with the machine filter applied too.
		c = &collector{last: uint64(len(prefill)) + 3}
		done := streamAsync(t.Context(), h, want[2], Filter{Instance: "x", Machine: "m"}, c.send)
		synctest.Wait()
		commit(t, st, change("m", "other-1"), change("n", "x"), change("m", "x"))
		if err := <-done; !errors.Is(err, errStop) {
			t.Fatalf("live Stream: %v", err)
		}
		checkSeqs(t, c.got(), append(slices.Clone(want[2:]), c.last))

		st.compactedBefore = 10
		err := h.Stream(t.Context(), 3, Filter{Instance: "x"}, c.send, StopAtHead())
		if _, ok := errors.AsType[*OutOfRangeError](err); !ok {
			t.Fatalf("Stream from a compacted seq: %v, want OutOfRangeError", err)
		}
	})
}

// TestReplayPagesBoundedByBytes replays changes with 64 KiB params: the
// replay reads them in pages of about 1 MiB, not Options.ReplayPage (512)
// of them at once; small changes still come 512 to a page.
func TestReplayPagesBoundedByBytes(t *testing.T) {
	big := make([]fsm.Change, 200)
	for i := range big {
		big[i] = change("m", "i")
		big[i].Params = map[string]string{"k": strings.Repeat("x", 64<<10)}
	}
	st := newFakeStore(t, big)
	h := mustHub(t, st, Options{})
	c := &collector{}
	if err := h.Stream(t.Context(), 1, Filter{}, c.send, StopAtHead()); err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, c.got(), seqRange(1, 200))
	if n := st.maxRead.Load(); n > 32 {
		t.Fatalf("a replay page held %d changes of 64 KiB", n)
	}

	commit(t, st, mixed(2000)...)
	st.maxRead.Store(0)
	c = &collector{}
	if err := h.Stream(t.Context(), 201, Filter{}, c.send, StopAtHead()); err != nil {
		t.Fatal(err)
	}
	if n := st.maxRead.Load(); n != DefaultReplayPage {
		t.Fatalf("small changes: largest page %d, want %d", n, DefaultReplayPage)
	}
}
