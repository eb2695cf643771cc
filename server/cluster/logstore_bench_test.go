package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/dfsmr/dfsmr/server/cluster"
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

// BenchmarkPropose measures a one-node cluster's proposals, one at a time
// and from 16 goroutines per CPU at once (raft writes the waiting ones as
// one batch).
//
//	go test -run '^$' -bench Propose -benchtime 2000x ./server/cluster/
func BenchmarkPropose(b *testing.B) {
	data := make([]byte, 512)
	open := func(b *testing.B) *cluster.Node {
		n, err := cluster.Open(cluster.Config{ID: "n1", RaftAddr: "127.0.0.1:0", GRPCAddr: "grpc-n1:5003", Dir: b.TempDir(), Bootstrap: true,
			Logger: slog.New(slog.DiscardHandler)}, newMemSM())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = n.Shutdown() })
		leader := make(chan struct{})
		var once sync.Once
		n.OnLeadership(func(l bool) {
			if l {
				once.Do(func() { close(leader) })
			}
		})
		<-leader
		return n
	}
	b.Run("serial", func(b *testing.B) {
		n := open(b)
		for b.Loop() {
			if err := n.Propose(context.Background(), data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		n := open(b)
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := n.Propose(context.Background(), data); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
