package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// slowLog is a log that applies what is submitted in order, each command
// a millisecond after the one before, so that the writer has several write
// sets in flight. Before the commands numbered in foreign it applies a
// write set of another leader (a device "other-N"), as a log does when a
// leader was deposed while it had write sets in flight.
type slowLog struct {
	s       *Store
	foreign map[int]bool
	// hold, when set, keeps the first command from applying until it is
	// closed.
	hold chan struct{}

	q     inOrder
	mu    sync.Mutex
	n     int
	stale atomic.Int64
	max   atomic.Int64 // most commands submitted and not yet applied
	open  atomic.Int64
	// written are the counter values the other leader wrote.
	written []uint64
}

func (l *slowLog) Submit(_ context.Context, data []byte) func() error {
	l.mu.Lock()
	l.n++
	n := l.n
	l.mu.Unlock()
	if o := l.open.Add(1); o > l.max.Load() {
		l.max.Store(o)
	}
	return l.q.queue(nil, func() error {
		defer l.open.Add(-1)
		if n == 1 && l.hold != nil {
			<-l.hold
		}
		time.Sleep(time.Millisecond)
		if l.foreign[n] {
			if err := l.applyForeign(n); err != nil {
				return err
			}
		}
		err := l.s.applyNext(data)
		if errors.Is(err, errStale) {
			l.stale.Add(1)
		}
		return err
	})
}

// applyForeign applies a write set computed on the applied state by
// someone else than the store's writer: it adds 1000 to the counter.
func (l *slowLog) applyForeign(n int) error {
	btx, err := l.s.db.Begin(false)
	if err != nil {
		return err
	}
	last := getUint(btx.Bucket(bucketMeta), keyLastWrite)
	ws := &writeSet{}
	wt := &writeTx{readTx: readTx{tx: btx, ov: newOverlay()}, ws: ws}
	err = wt.PutDevice(fsm.Device{ID: fmt.Sprintf("other-%d", n)})
	if err == nil {
		var d fsm.Device
		d, err = wt.Device("counter")
		if errors.Is(err, store.ErrNotFound) {
			d, err = fsm.Device{ID: "counter"}, nil
		}
		d.ReportSeq += 1000
		l.written = append(l.written, d.ReportSeq)
		if err == nil {
			err = wt.PutDevice(d)
		}
	}
	_ = btx.Rollback()
	if err != nil {
		return err
	}
	return l.s.applyNext(writeCommand(last, randomID(), ws))
}

// TestWriterRecomputesWriteSetsRefusedAsStale: write sets in flight when
// another leader's write applied are refused on apply and computed again,
// so that every Update applies exactly once, on the state it read; and an
// Update that only reads never sees a write that was then refused.
func TestWriterRecomputesWriteSetsRefusedAsStale(t *testing.T) {
	// Small batches: the writer computes the next batch while one is in
	// flight as soon as a quarter of MaxBatch waits.
	s, err := Open(filepath.Join(t.TempDir(), "dfsmr.db"), Options{MaxBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	log := &slowLog{s: s, foreign: map[int]bool{2: true, 4: true, 5: true}}
	s.SetProposer(log)

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	var readMu sync.Mutex
	var read []uint64
	for range n {
		wg.Go(func() {
			var v uint64 // as the last run read it: a function may run more than once
			err := s.Update(context.Background(), func(tx store.Tx) error {
				d, err := tx.Device("counter")
				if errors.Is(err, store.ErrNotFound) {
					v = 0
					return nil
				}
				v = d.ReportSeq
				return err
			})
			if v != 0 {
				readMu.Lock()
				read = append(read, v)
				readMu.Unlock()
			}
			errs <- err
		})
	}
	for i := range n {
		wg.Go(func() {
			errs <- s.Update(context.Background(), func(tx store.Tx) error {
				d, err := tx.Device("counter")
				if errors.Is(err, store.ErrNotFound) {
					d = fsm.Device{ID: "counter"}
				} else if err != nil {
					return err
				}
				d.ReportSeq++
				if err := tx.PutDevice(d); err != nil {
					return err
				}
				// Every Update also writes a device of its own.
				return tx.PutDevice(fsm.Device{ID: fmt.Sprintf("d-%d", i), ReportSeq: d.ReportSeq})
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
	}
	if log.stale.Load() == 0 || log.max.Load() < 2 {
		t.Fatalf("%d write sets refused as stale, at most %d in flight: the test did not exercise the recompute of write sets in flight", log.stale.Load(), log.max.Load())
	}
	if log.n < 5 {
		t.Fatalf("%d commands submitted: the other leader's writes did not all apply", log.n)
	}
	err = s.View(context.Background(), func(tx store.ReadTx) error {
		d, err := tx.Device("counter")
		if err != nil {
			return err
		}
		if want := uint64(n + 1000*len(log.foreign)); d.ReportSeq != want {
			return fmt.Errorf("counter is %d after %d increments and %d additions of 1000, want %d", d.ReportSeq, n, len(log.foreign), want)
		}
		seen := map[uint64]bool{}
		for _, v := range log.written {
			seen[v] = true
		}
		for i := range n {
			d, err := tx.Device(fmt.Sprintf("d-%d", i))
			if err != nil {
				return err
			}
			if seen[d.ReportSeq] {
				return fmt.Errorf("two updates read counter %d", d.ReportSeq)
			}
			seen[d.ReportSeq] = true
		}
		// seen holds every value the counter took.
		for _, v := range read {
			if !seen[v] {
				return fmt.Errorf("an Update that only read saw counter %d, a value it never took", v)
			}
		}
		for k := range log.foreign {
			if _, err := tx.Device(fmt.Sprintf("other-%d", k)); err != nil {
				return fmt.Errorf("the other leader's write: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d commands, %d write sets refused as stale and computed again, at most %d in flight", log.n, log.stale.Load(), log.max.Load())
}

// TestReadOnlyUpdateWaitsForWhatItRead: an Update that writes nothing,
// computed while a write set is in flight, reads that write set's writes;
// it is answered only once they applied, and read again when they were
// refused.
func TestReadOnlyUpdateWaitsForWhatItRead(t *testing.T) {
	// MaxBatch 2: the writer computes a batch while one is in flight
	// whatever waits.
	s, err := Open(filepath.Join(t.TempDir(), "dfsmr.db"), Options{MaxBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	log := &slowLog{s: s, foreign: map[int]bool{1: true}, hold: make(chan struct{})}
	s.SetProposer(log)
	release := sync.OnceFunc(func() { close(log.hold) })
	defer release() // before Close, which waits for the write set held

	computed := make(chan struct{})
	var once sync.Once
	testHookComputed = func(wrote bool, inFlight int) {
		if !wrote && inFlight > 0 {
			once.Do(func() { close(computed) })
		}
	}
	defer func() { testHookComputed = nil }()

	wrote := make(chan error, 1)
	go func() {
		wrote <- s.Update(context.Background(), func(tx store.Tx) error {
			d, err := tx.Device("counter")
			if errors.Is(err, store.ErrNotFound) {
				d, err = fsm.Device{ID: "counter"}, nil
			}
			d.ReportSeq++
			if err == nil {
				err = tx.PutDevice(d)
			}
			return err
		})
	}()
	for log.open.Load() == 0 { // the increment is in flight, held
		time.Sleep(time.Millisecond)
	}
	var seen uint64
	read := make(chan error, 1)
	go func() {
		read <- s.Update(context.Background(), func(tx store.Tx) error {
			d, err := tx.Device("counter")
			seen = d.ReportSeq
			return err
		})
	}()
	<-computed // the read ran with the increment laid over it
	select {
	case err := <-read:
		t.Fatalf("the read returned (%v, counter %d) before the write set it read applied", err, seen)
	case <-time.After(20 * time.Millisecond):
	}
	release() // the other leader's write applies first: the increment is refused
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if seen != 1001 {
		t.Fatalf("the read saw counter %d; it took the values 1000 and 1001", seen)
	}
	if log.stale.Load() == 0 {
		t.Fatal("the increment was not refused: the test did not exercise the read of a refused write")
	}
}

// latencyLog applies each command after a fixed delay, as a log whose
// entries wait for a round trip to other servers does, and keeps several
// on their way at once.
type latencyLog struct {
	s     *Store
	delay time.Duration
	q     inOrder
}

func (l *latencyLog) Submit(_ context.Context, data []byte) func() error {
	sent := time.Now()
	return l.q.queue(func() { time.Sleep(time.Until(sent.Add(l.delay))) }, func() error { return l.s.applyNext(data) })
}

// BenchmarkWriterOverSlowLog runs 256 concurrent read-modify-write
// Updates against a log that takes 2 ms to commit an entry, with the
// writer pipelined (its default) and, as the baseline of the same run,
// waiting for each write set to apply before it computes the next. It
// reports updates/s of each and their ratio.
func BenchmarkWriterOverSlowLog(b *testing.B) {
	run := func(b *testing.B, inFlight int) float64 {
		s, err := Open(filepath.Join(b.TempDir(), "dfsmr.db"), Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		s.inFlight = inFlight
		s.SetProposer(&latencyLog{s: s, delay: 2 * time.Millisecond})
		const workers = 256
		var next atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				id := fmt.Sprintf("d-%d", w)
				for next.Add(1) <= int64(b.N) {
					err := s.Update(context.Background(), func(tx store.Tx) error {
						d, err := tx.Device(id)
						if errors.Is(err, store.ErrNotFound) {
							d, err = fsm.Device{ID: id}, nil
						}
						d.ReportSeq++
						if err == nil {
							err = tx.PutDevice(d)
						}
						return err
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return float64(b.N) / time.Since(start).Seconds()
	}
	serial := run(b, 1)
	b.ResetTimer()
	pipelined := run(b, defaultInFlight)
	b.ReportMetric(pipelined, "updates/s")
	b.ReportMetric(serial, "serial-updates/s")
	b.ReportMetric(pipelined/serial, "x-vs-serial")
}

// TestWriteSetOfThePreviousReleaseApplies: a log written by the previous
// release holds write sets that name their base by log index
// (CommandWriteAt); they apply on their base, the index becomes the last
// write set applied, and the writer's write sets chain on from it.
func TestWriteSetOfThePreviousReleaseApplies(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "dfsmr.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := func(base uint64, id string) []byte {
		btx, err := s.db.Begin(false)
		if err != nil {
			t.Fatal(err)
		}
		defer btx.Rollback()
		ws := &writeSet{}
		wt := &writeTx{readTx: readTx{tx: btx, ov: newOverlay()}, ws: ws}
		if err := wt.PutDevice(fsm.Device{ID: id}); err != nil {
			t.Fatal(err)
		}
		cmd := binary.AppendUvarint([]byte{store.CommandWriteAt}, base)
		return append(cmd, ws.buf...)
	}
	applied := s.AppliedIndex()
	last := func() (v uint64) {
		_ = s.db.View(func(tx *bbolt.Tx) error { v = getUint(tx.Bucket(bucketMeta), keyLastWrite); return nil })
		return v
	}
	base := last()
	res := s.Apply([]store.Entry{
		{Index: applied + 1, Data: old(base, "a")},
		{Index: applied + 2, Data: old(base+12345, "b")}, // not on its base
		{Index: applied + 3, Data: old(applied+1, "c")},
	})
	if res[0] != nil || !errors.Is(res[1], errStale) || res[2] != nil {
		t.Fatalf("Apply = %v, want nil, stale, nil", res)
	}
	if got := last(); got != applied+3 {
		t.Fatalf("last write set %d, want index %d", got, applied+3)
	}
	if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.PutDevice(fsm.Device{ID: "d"}) }); err != nil {
		t.Fatal(err)
	}
	err = s.View(context.Background(), func(tx store.ReadTx) error {
		for _, id := range []string{"a", "c", "d"} {
			if _, err := tx.Device(id); err != nil {
				return err
			}
		}
		if _, err := tx.Device("b"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("device b of the refused write set: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
