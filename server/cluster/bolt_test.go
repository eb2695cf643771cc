package cluster_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/cluster"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

// signalStore is the bolt store as the state machine, telling the test
// when it applied entries and when a snapshot of it was released.
type signalStore struct {
	*bolt.Store
	applied  chan struct{}
	released chan struct{}
	restores atomic.Int32
}

func (s *signalStore) Restore(r io.Reader) error {
	s.restores.Add(1)
	return s.Store.Restore(r)
}

func (s *signalStore) Apply(entries []store.Entry) []error {
	res := s.Store.Apply(entries)
	select {
	case s.applied <- struct{}{}:
	default:
	}
	return res
}

func (s *signalStore) Snapshot() (store.Snapshot, error) {
	snap, err := s.Store.Snapshot()
	if err != nil {
		return nil, err
	}
	return releaseSignal{snap, s.released}, nil
}

type releaseSignal struct {
	store.Snapshot
	released chan struct{}
}

func (r releaseSignal) Release() {
	r.Snapshot.Release()
	select {
	case r.released <- struct{}{}:
	default:
	}
}

func (h *harness) openBolt(dir string) *signalStore {
	h.t.Helper()
	s, err := bolt.Open(filepath.Join(dir, "dfsmr.db"), bolt.Options{
		Logger: slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = s.Close() })
	return newSignalStore(s)
}

func newSignalStore(s *bolt.Store) *signalStore {
	return &signalStore{Store: s, applied: make(chan struct{}, 1), released: make(chan struct{}, 1)}
}

func addSample(t *testing.T, s *signalStore, d time.Duration) error {
	t.Helper()
	return s.Update(ctx(t), func(tx store.Tx) error { return tx.AddDurationSample("m", 1, "n", d) })
}

func samples(t *testing.T, s *signalStore) []time.Duration {
	t.Helper()
	var got []time.Duration
	err := s.View(context.Background(), func(tx store.ReadTx) (err error) {
		got, err = tx.DurationSamples("m", 1, "n")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// waitSamples waits until the store holds want.
func waitSamples(t *testing.T, s *signalStore, want []time.Duration) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !slices.Equal(samples(t, s), want) {
		select {
		case <-s.applied:
		case <-deadline:
			t.Fatalf("the store has %v, want %v", samples(t, s), want)
		}
	}
}

// TestBoltStore runs the cluster over the server's own state machine: the
// leader's store proposes its writes, every store applies them, a store
// that joins after the log was compacted gets a snapshot of a store.
func TestBoltStore(t *testing.T) {
	h := newHarness(t)
	compact := func(c *cluster.Config) {
		c.SnapshotInterval = 20 * time.Millisecond
		c.SnapshotThreshold = 8
		c.TrailingLogs = 4
		cluster.SetWALSegmentSize(c, 1024)
	}
	stores := map[string]*signalStore{}
	nodes := map[string]*testNode{}
	open := func(id string, configure func(*cluster.Config)) {
		dir := t.TempDir()
		stores[id] = h.openBolt(dir)
		nodes[id] = h.open(id, "", dir, stores[id], configure)
		stores[id].SetProposer(nodes[id])
	}
	open("n1", func(c *cluster.Config) { compact(c); c.Bootstrap = true })
	h.waitLeader()
	open("n2", compact)
	if err := nodes["n1"].AddVoter(ctx(t), "n2", nodes["n2"].Addr(), nodes["n2"].grpc); err != nil {
		t.Fatal(err)
	}
	var want []time.Duration
	for i := range 30 {
		d := time.Duration(i+1) * time.Millisecond
		if err := addSample(t, stores["n1"], d); err != nil {
			t.Fatal(err)
		}
		want = append(want, d)
	}
	waitSamples(t, stores["n2"], want)
	// A follower's store refuses writes, naming the leader.
	var nle *cluster.NotLeaderError
	if err := addSample(t, stores["n2"], time.Second); !errors.As(err, &nle) || nle.LeaderID != "n1" {
		t.Fatalf("write on a follower's store: %v", err)
	}
	if addr, _, err := nodes["n2"].LeaderGRPC(); err != nil || addr != nodes["n1"].grpc {
		t.Fatalf("LeaderGRPC on n2 = %q, %v (members as recorded by the store)", addr, err)
	}

	select {
	case <-stores["n1"].released:
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot taken")
	}
	restored := make(chan struct{}, 1)
	dir := t.TempDir()
	s, err := bolt.Open(filepath.Join(dir, "dfsmr.db"), bolt.Options{
		Logger:    slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		OnRestore: func() { restored <- struct{}{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	stores["n3"] = newSignalStore(s)
	nodes["n3"] = h.open("n3", "", dir, stores["n3"], compact)
	stores["n3"].SetProposer(nodes["n3"])
	if err := nodes["n1"].AddVoter(ctx(t), "n3", nodes["n3"].Addr(), nodes["n3"].grpc); err != nil {
		t.Fatal(err)
	}
	select {
	case <-restored:
	case <-time.After(10 * time.Second):
		t.Fatal("n3 did not restore a snapshot")
	}
	want = append(want, time.Minute)
	if err := addSample(t, stores["n1"], time.Minute); err != nil {
		t.Fatal(err)
	}
	waitSamples(t, stores["n3"], want)
	waitSamples(t, stores["n2"], want)
	// (The leader may snapshot again while n3 catches up, and send that.)
	if got := stores["n3"].restores.Load(); got < 1 {
		t.Fatalf("n3 restored %d snapshots", got)
	}

	// n2 restarts over its durable store, which is ahead of the latest
	// snapshot: nothing is restored, the entries it holds are skipped.
	addr := nodes["n2"].Addr()
	if err := nodes["n2"].Shutdown(); err != nil {
		t.Fatal(err)
	}
	want = append(want, time.Hour)
	if err := addSample(t, stores["n1"], time.Hour); err != nil {
		t.Fatal(err)
	}
	nodes["n2"] = h.open("n2", addr, nodes["n2"].dir, stores["n2"], compact)
	stores["n2"].SetProposer(nodes["n2"])
	waitSamples(t, stores["n2"], want)
	if got := stores["n2"].restores.Load(); got != 0 {
		t.Fatalf("n2 restored %d snapshots over a durable store", got)
	}
}
