package cluster_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// BenchmarkLogStore compares the two candidate log stores at what raft
// asks of them: StoreLogs of a batch of entries, synced before it returns
// (raft-wal fsyncs each call, raft-boltdb commits each call). ns/op is per
// batch; entries/s is the throughput.
//
//	go test -run '^$' -bench LogStore -benchtime 200x ./server/cluster/
func BenchmarkLogStore(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B, dir string) (raft.LogStore, func() error)
	}{
		{"wal", func(b *testing.B, dir string) (raft.LogStore, func() error) {
			meta := &metadb.BoltMetaDB{}
			w, err := wal.Open(dir, wal.WithMetaStore(meta))
			if err != nil {
				b.Fatal(err)
			}
			return w, func() error { _ = w.Close(); return meta.Close() }
		}},
		{"boltdb", func(b *testing.B, dir string) (raft.LogStore, func() error) {
			s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
			if err != nil {
				b.Fatal(err)
			}
			return s, s.Close
		}},
	}
	data := make([]byte, 512)
	for _, s := range stores {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/batch=%d", s.name, batch), func(b *testing.B) {
				store, closeStore := s.open(b, b.TempDir())
				defer func() {
					if err := closeStore(); err != nil {
						b.Fatal(err)
					}
				}()
				logs := make([]*raft.Log, batch)
				for i := range logs {
					logs[i] = &raft.Log{Type: raft.LogCommand, Term: 1, Data: data}
				}
				next := uint64(1)
				b.SetBytes(int64(batch * len(data)))
				for b.Loop() {
					for _, l := range logs {
						l.Index = next
						next++
					}
					if err := store.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
			})
		}
	}
}
