package storetest

import (
	"context"
	"errors"
	"flag"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

var seedFlag = flag.Uint64("storetest.seed", 0, "seed of the randomized store tests (0: the fixed default)")

// defaultSeed makes the randomized tests reproducible run to run; pass
// -storetest.seed to explore others.
const defaultSeed = 20251103

// Config says what to open.
type Config struct {
	// Dir is a fresh, empty directory owned by one subtest. The store's
	// data lives there (a file for bbolt, a key prefix derived from it for
	// a networked store): opening the same Dir again after Close must see
	// everything committed before.
	Dir string
	// Hook, when non-nil, must be installed as the store's CommitHook.
	Hook store.CommitHook
}

// OpenFunc opens the store named by cfg, failing t if it cannot. The suite
// closes every store it opens.
type OpenFunc func(t *testing.T, cfg Config) store.Store

// Exercise runs the conformance suite against the stores open returns.
func Exercise(t *testing.T, open OpenFunc) {
	t.Helper()
	s := &suite{open: open}
	t.Run("Machines", s.machines)
	t.Run("Instances", s.instances)
	t.Run("Ready", s.ready)
	t.Run("Due", s.due)
	t.Run("Changes", s.changes)
	t.Run("Update", s.update)
	t.Run("CommitHook", s.commitHook)
	t.Run("Close", s.close)
	t.Run("Reopen", s.reopen)
	t.Run("DurationSamples", s.durations)
	t.Run("Breakers", s.breakers)
	t.Run("Devices", s.devices)
	t.Run("Retention", s.retention)
	t.Run("Model", s.model)
}

type suite struct {
	open OpenFunc
}

// mustOpen opens a store in cfg.Dir (a new directory when empty) and
// closes it when t ends.
func (s *suite) mustOpen(t *testing.T, cfg Config) (store.Store, Config) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	st := s.open(t, cfg)
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return st, cfg
}

func (s *suite) fresh(t *testing.T) store.Store {
	t.Helper()
	st, _ := s.mustOpen(t, Config{})
	return st
}

// reopenStore closes st and opens the same data again.
func (s *suite) reopenStore(t *testing.T, st store.Store, cfg Config) store.Store {
	t.Helper()
	if err := st.Close(); err != nil {
		t.Fatalf("close before reopen: %v", err)
	}
	st, _ = s.mustOpen(t, cfg)
	return st
}

// Helpers shared by the tests.

var (
	ctx     = context.Background()
	errBoom = errors.New("boom")
	// base is a clock value with a non-UTC location and a monotonic
	// reading, which the store must not keep.
	base = time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))
)

func update(t testing.TB, st store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := st.Update(ctx, fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func view(t testing.TB, st store.Store, fn func(tx store.ReadTx) error) {
	t.Helper()
	if err := st.View(ctx, fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}

func put(t testing.TB, st store.Store, ins ...fsm.Instance) {
	t.Helper()
	update(t, st, func(tx store.Tx) error {
		for _, in := range ins {
			if err := tx.PutInstance(in); err != nil {
				return err
			}
		}
		return nil
	})
}

func appendChanges(t testing.TB, st store.Store, cs ...fsm.Change) []uint64 {
	t.Helper()
	var seqs []uint64
	update(t, st, func(tx store.Tx) error {
		seqs = seqs[:0]
		for _, c := range cs {
			seq, err := tx.AppendChange(c)
			if err != nil {
				return err
			}
			seqs = append(seqs, seq)
		}
		return nil
	})
	return seqs
}

// inst builds an instance with the fields the indexes care about.
func inst(id, machine, node string, status fsm.Status, prio int32, due time.Time) fsm.Instance {
	in := fsm.Instance{
		ID: id, Machine: machine, Version: 1, Node: node, Status: status,
		Priority: prio, DueAt: due, Attempt: 1, Rev: 1,
		CreatedAt: base, UpdatedAt: base,
	}
	if status == fsm.StatusLeased {
		in.Token = 1
		in.Lease = fsm.Lease{Token: 1, Worker: "w", AcquiredAt: base, ExpiresAt: due}
	}
	return in
}

func getInstance(t testing.TB, st store.Store, id string) fsm.Instance {
	t.Helper()
	var in fsm.Instance
	view(t, st, func(tx store.ReadTx) error {
		var err error
		in, err = tx.Instance(id)
		return err
	})
	return in
}

func readyIDs(t testing.TB, st store.Store, f store.ReadyFilter, limit int) []string {
	t.Helper()
	var ids []string
	view(t, st, func(tx store.ReadTx) error {
		var err error
		ids, err = tx.Ready(f, limit)
		return err
	})
	return ids
}

func dueAll(t testing.TB, st store.Store) []store.Due {
	t.Helper()
	var ds []store.Due
	view(t, st, func(tx store.ReadTx) error {
		var err error
		ds, err = tx.Due(farFuture, 0)
		return err
	})
	return normDues(ds)
}

func head(t testing.TB, st store.Store) uint64 {
	t.Helper()
	var h uint64
	view(t, st, func(tx store.ReadTx) error {
		var err error
		h, err = tx.Head()
		return err
	})
	return h
}

var farFuture = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

// Normalization: what a store gives back for a value it was given. Empty
// slices normalize to nil, so that an implementation may return either.

func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.Unix(0, t.UnixNano()).UTC()
}

func normParams(p map[string]string) map[string]string {
	if len(p) == 0 {
		return nil
	}
	return p
}

func norm(in fsm.Instance) fsm.Instance {
	in.Params = normParams(in.Params)
	in.DueAt = normTime(in.DueAt)
	in.Lease.AcquiredAt = normTime(in.Lease.AcquiredAt)
	in.Lease.ExpiresAt = normTime(in.Lease.ExpiresAt)
	in.CreatedAt = normTime(in.CreatedAt)
	in.UpdatedAt = normTime(in.UpdatedAt)
	return in
}

func normAll(ins []fsm.Instance) []fsm.Instance {
	if len(ins) == 0 {
		return nil
	}
	out := make([]fsm.Instance, len(ins))
	for i, in := range ins {
		out[i] = norm(in)
	}
	return out
}

func normChange(c fsm.Change) fsm.Change {
	c.Params = normParams(c.Params)
	c.At = normTime(c.At)
	c.DueAt = normTime(c.DueAt)
	return c
}

func normChanges(cs []fsm.Change) []fsm.Change {
	if len(cs) == 0 {
		return nil
	}
	out := make([]fsm.Change, len(cs))
	for i, c := range cs {
		out[i] = normChange(c)
	}
	return out
}

func normMachine(m store.MachineRecord) store.MachineRecord {
	if len(m.Source) == 0 {
		m.Source = nil
	}
	m.DefinedAt = normTime(m.DefinedAt)
	return m
}

func normDues(ds []store.Due) []store.Due {
	if len(ds) == 0 {
		return nil
	}
	out := make([]store.Due, len(ds))
	for i, d := range ds {
		out[i] = store.Due{At: normTime(d.At), ID: d.ID}
	}
	return out
}

func equal[T any](t testing.TB, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// nonNil turns a nil slice into an empty one so that DeepEqual compares
// contents only.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func isInvariant(err error) bool {
	var ie *fsm.InvariantError
	return errors.As(err, &ie)
}

func seed(t *testing.T) uint64 {
	sd := *seedFlag
	if sd == 0 {
		sd = defaultSeed
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("random seed %d: rerun with -storetest.seed=%d", sd, sd)
		}
	})
	return sd
}

func newRand(sd uint64) *rand.Rand { return rand.New(rand.NewPCG(sd, sd^0x9e3779b97f4a7c15)) }
