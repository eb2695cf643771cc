package metrics_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/changes"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/metrics"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

// BenchmarkCommitHook measures what metrics add to the store's commit
// hook, per change, on batches of 64 changes of 1000 instances spread over
// 3 nodes: "publish" is the changelog hub alone (no watchers), the
// baseline; "publish+metrics" adds Metrics.OnCommit. Both run on the
// store's writer goroutine after every commit.
func BenchmarkCommitHook(b *testing.B) {
	const batch = 64
	nodes := []string{"downloadable", "uploadable", "completed"}
	statuses := []fsm.Status{fsm.StatusReady, fsm.StatusLeased, fsm.StatusWaiting}
	mk := func(seq uint64) []fsm.Change {
		cs := make([]fsm.Change, batch)
		for i := range cs {
			s := seq + uint64(i)
			cs[i] = fsm.Change{
				Seq: s, Kind: fsm.ChangeTransitioned, Instance: fmt.Sprint("i-", s%1000), Machine: "report",
				FromNode: nodes[s%3], ToNode: nodes[(s+1)%3], FromStatus: statuses[s%3], ToStatus: statuses[(s+1)%3],
				At: time.Unix(0, 0),
			}
		}
		return cs
	}
	for _, withMetrics := range []bool{false, true} {
		name := "publish"
		if withMetrics {
			name = "publish+metrics"
		}
		b.Run(name, func(b *testing.B) {
			st, err := bolt.Open(filepath.Join(b.TempDir(), "dfsmr.db"), bolt.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			hub := changes.New(st, changes.Options{})
			m := metrics.New(metrics.Sources{})
			// Built once; each round only renumbers, as the hub checks that
			// sequence numbers follow on.
			cs := mk(1)
			seq := uint64(1)
			for b.Loop() {
				for i := range cs {
					cs[i].Seq = seq
					seq++
				}
				hub.Publish(cs)
				if withMetrics {
					m.OnCommit(cs)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/change")
		})
	}
}

// BenchmarkLoad measures the one scan Load makes at start, per instance,
// over a store of 50,000 instances.
func BenchmarkLoad(b *testing.B) {
	const n = 50_000
	st, err := bolt.Open(filepath.Join(b.TempDir(), "dfsmr.db"), bolt.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for i := 0; i < n; i += 1000 {
		err := st.Update(b.Context(), func(tx store.Tx) error {
			for j := i; j < i+1000; j++ {
				in := fsm.Instance{ID: fmt.Sprintf("i-%06d", j), Machine: "report", Version: 1, Node: "downloadable",
					Status: fsm.StatusReady, Attempt: 1, Rev: 1, Params: map[string]string{"day": "2026-11-23"}}
				if err := tx.PutInstance(in); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	m := metrics.New(metrics.Sources{})
	for b.Loop() {
		if err := m.Load(b.Context(), st); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/instance")
}
