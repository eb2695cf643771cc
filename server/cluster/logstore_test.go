package cluster_test

import (
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// TestLogSurvivesTailTruncation does to the log store what raft does to a
// deposed leader that rejoins: it deletes the entries that never committed
// at the log's tail and appends the new leader's. The log must open again
// afterwards. raft-wal v0.4.0 sealed the segment without its index there,
// and the next start failed with "sealed segment has no index block"; the
// server then never started again (go.mod requires v0.4.2, which fixed it).
func TestLogSurvivesTailTruncation(t *testing.T) {
	dir := t.TempDir()
	open := func() (*wal.WAL, *metadb.BoltMetaDB) {
		t.Helper()
		meta := &metadb.BoltMetaDB{}
		w, err := wal.Open(dir, wal.WithMetaStore(meta))
		if err != nil {
			t.Fatalf("open the log: %v", err)
		}
		return w, meta
	}
	w, meta := open()
	for i := uint64(1); i <= 100; i++ {
		if err := w.StoreLog(&raft.Log{Index: i, Term: 1, Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.DeleteRange(91, 100); err != nil {
		t.Fatal(err)
	}
	for i := uint64(91); i <= 95; i++ {
		if err := w.StoreLog(&raft.Log{Index: i, Term: 2, Data: []byte("y")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := meta.Close(); err != nil {
		t.Fatal(err)
	}
	w, meta = open()
	defer meta.Close()
	defer w.Close()
	var l raft.Log
	for _, i := range []uint64{1, 90, 95} {
		if err := w.GetLog(i, &l); err != nil {
			t.Fatalf("after reopening, entry %d: %v", i, err)
		}
	}
	if last, err := w.LastIndex(); err != nil || last != 95 {
		t.Fatalf("after reopening, last index %d, %v; want 95", last, err)
	}
}
