package engine_test

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

var benchMillion = flag.Bool("bench.million", false, "BenchmarkReady: also run with 1,000,000 idle instances (slow to set up)")

// BenchmarkReady measures one Ready + Relinquish round trip on a queue of 16
// READY instances while the store holds n idle instances: half WAITING far in
// the future, half FINAL. The ready index holds only READY instances, so the
// cost must stay flat as n grows; n=0 is the baseline of the same run.
func BenchmarkReady(b *testing.B) {
	sizes := []int{0, 1_000, 10_000, 100_000}
	if *benchMillion {
		sizes = append(sizes, 1_000_000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("idle=%d", n), func(b *testing.B) {
			var e *engine.Engine
			st, err := bolt.Open(filepath.Join(b.TempDir(), "dfsmr.db"), bolt.Options{
				CommitHook: func(c []fsm.Change) { e.OnCommit(c) },
			})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			e = engine.New(st, engine.Options{})
			ctx := context.Background()
			for _, src := range machines.Bundled() {
				if _, _, err := e.DefineMachine(ctx, src.File, src.Data, "bench"); err != nil {
					b.Fatal(err)
				}
			}
			fillIdle(b, e, st, n)
			for i := range 16 {
				if _, _, err := e.StartInstance(ctx, engine.StartArgs{ID: fmt.Sprint("hot-", i), Machine: "report"}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "bench", Machine: "report"})
				if err != nil || !ok {
					b.Fatalf("Ready: ok=%v err=%v", ok, err)
				}
				if _, err := e.Relinquish(ctx, in.ID, in.Lease.Token, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// fillIdle writes n idle report instances straight through the store, many
// per transaction, so that setting up a million takes seconds, not an hour.
func fillIdle(b *testing.B, e *engine.Engine, st store.Store, n int) {
	b.Helper()
	info, _, err := e.GetMachine(context.Background(), "report", 0)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	const perTx = 10_000
	for start := 0; start < n; start += perTx {
		err := st.Update(context.Background(), func(tx store.Tx) error {
			for i := start; i < min(start+perTx, n); i++ {
				in, _, err := fsm.Start(info.Machine, fsm.StartArgs{ID: fmt.Sprintf("idle-%07d", i), DueAt: now.Add(24 * time.Hour)}, now)
				if err != nil {
					return err
				}
				if i%2 == 1 {
					if in, _, err = fsm.Apply(info.Machine, in, fsm.Cancel{}, now); err != nil {
						return err
					}
				}
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
}
