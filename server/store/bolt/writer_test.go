package bolt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

	mu    sync.Mutex
	n     int
	tail  chan struct{}
	stale atomic.Int64
	max   atomic.Int64 // most commands submitted and not yet applied
	open  atomic.Int64
}

func (l *slowLog) Submit(_ context.Context, data []byte) func() error {
	l.mu.Lock()
	l.n++
	n, prev, done := l.n, l.tail, make(chan struct{})
	l.tail = done
	l.mu.Unlock()
	if o := l.open.Add(1); o > l.max.Load() {
		l.max.Store(o)
	}
	var err error
	go func() {
		defer close(done)
		defer l.open.Add(-1)
		if prev != nil {
			<-prev
		}
		time.Sleep(time.Millisecond)
		if l.foreign[n] {
			if ferr := l.applyForeign(n); ferr != nil {
				err = ferr
				return
			}
		}
		err = l.s.Apply([]store.Entry{{Index: l.s.AppliedIndex() + 1, Data: data}})[0]
		if errors.Is(err, errStale) {
			l.stale.Add(1)
		}
	}()
	return func() error {
		<-done
		return err
	}
}

// applyForeign applies a write set computed on the applied state by
// someone else than the store's writer.
func (l *slowLog) applyForeign(n int) error {
	btx, err := l.s.db.Begin(false)
	if err != nil {
		return err
	}
	last := getUint(btx.Bucket(bucketMeta), keyLastWrite)
	ws := &writeSet{}
	wt := &writeTx{readTx: readTx{tx: btx, ov: newOverlay()}, ws: ws}
	err = wt.PutDevice(fsm.Device{ID: fmt.Sprintf("other-%d", n)})
	_ = btx.Rollback()
	if err != nil {
		return err
	}
	return l.s.Apply([]store.Entry{{Index: l.s.AppliedIndex() + 1, Data: writeCommand(last, randomID(), ws)}})[0]
}

// TestWriterRecomputesWriteSetsRefusedAsStale: write sets in flight when
// another leader's write applied are refused on apply and computed again,
// so that every Update applies exactly once, on the state it read.
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
	errs := make(chan error, n)
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
		if d.ReportSeq != n {
			return fmt.Errorf("counter is %d after %d increments", d.ReportSeq, n)
		}
		seen := map[uint64]bool{}
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
