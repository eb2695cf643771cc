package server_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

// TestBackupUnderLoad takes an online backup while 8 clients start, lease
// and transition instances. The copy opens as a store; its changelog runs
// without a gap from 1 to the head the server reported; every instance's
// history ends in the instance's state and counts its revisions; every
// write acknowledged before the backup began is in it; and a server starts
// on it.
func TestBackupUnderLoad(t *testing.T) {
	env := mustServer(t, server.Config{})
	ctx := t.Context()
	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	progress := make(chan struct{}, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("b%d-%d", w, i)
				if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "report"}); err != nil {
					t.Error(err)
					return
				}
				r, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "report", Node: "downloadable"})
				if err != nil {
					t.Error(err)
					return
				}
				if l := r.GetLease(); l != nil && i%2 == 0 {
					if _, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: r.GetInstance().GetId(), Token: l.GetToken(), Transition: "ok"}); err != nil {
						t.Error(err)
						return
					}
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
				if i == 20 {
					progress <- struct{}{}
				}
			}
		})
	}
	for range 8 {
		<-progress
	}
	mu.Lock()
	before := append([]string(nil), acked...)
	mu.Unlock()
	path := filepath.Join(t.TempDir(), "backup.db")
	info, err := client.New(env.conn).Backup(ctx, path)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup of %d bytes at head %d while %d starts were acknowledged", info.Size, info.HeadSeq, len(acked))

	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	checkConsistent(t, st, info.HeadSeq, before)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	restored := mustServer(t, server.Config{DB: path})
	for _, id := range before {
		if _, err := restored.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: id}); err != nil {
			t.Fatalf("instance %s, acknowledged before the backup, missing from it: %v", id, err)
		}
	}
}

// checkConsistent checks a store file as one snapshot: a gap-free
// changelog through head, and instances that agree with their histories.
func checkConsistent(t *testing.T, st store.Store, head uint64, present []string) {
	t.Helper()
	err := st.View(context.Background(), func(tx store.ReadTx) error {
		if h, err := tx.Head(); err != nil || h != head {
			t.Fatalf("head %d (%v), the server reported %d", h, err, head)
		}
		next := uint64(1)
		for next <= head {
			page, err := tx.Changes(next, 1000)
			if err != nil {
				return err
			}
			for _, c := range page {
				if c.Seq != next {
					t.Fatalf("changelog gap: seq %d after %d", c.Seq, next-1)
				}
				next++
			}
			if len(page) == 0 {
				t.Fatalf("changelog ends at %d, head is %d", next-1, head)
			}
		}
		instances := 0
		for after := ""; ; {
			page, err := tx.Instances(store.InstanceFilter{}, after, 1000)
			if err != nil {
				return err
			}
			for _, in := range page {
				hist, err := tx.History(in.ID)
				if err != nil {
					return err
				}
				if len(hist) == 0 || uint64(len(hist)) != in.Rev {
					t.Fatalf("instance %s: rev %d with %d history entries", in.ID, in.Rev, len(hist))
				}
				last := hist[len(hist)-1]
				if last.ToNode != in.Node || last.ToStatus != in.Status || last.Seq > head {
					t.Fatalf("instance %s is %s/%s but its last change (seq %d) says %s/%s", in.ID, in.Node, in.Status, last.Seq, last.ToNode, last.ToStatus)
				}
			}
			instances += len(page)
			if len(page) < 1000 {
				break
			}
			after = page[len(page)-1].ID
		}
		for _, id := range present {
			if _, err := tx.Instance(id); err != nil {
				t.Fatalf("instance %s, acknowledged before the backup, missing from it: %v", id, err)
			}
		}
		t.Logf("backup: %d changes, %d instances, consistent", head, instances)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
