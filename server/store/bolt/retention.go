package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

func (r *readTx) OldestChange() (uint64, bool, error) {
	b, err := r.bucket(bucketChanges)
	if err != nil {
		return 0, false, err
	}
	k, _ := b.Cursor().First()
	if k == nil {
		return 0, false, nil
	}
	if len(k) != 8 {
		return 0, false, fmt.Errorf("store: bad change key %q", k)
	}
	return binary.BigEndian.Uint64(k), true, nil
}

func (r *readTx) Finished(before time.Time, limit int) ([]string, error) {
	b, err := r.bucket(bucketFinished)
	if err != nil {
		return nil, err
	}
	bound := timeKey(before)
	var out []string
	c := b.Cursor()
	for k, _ := c.First(); k != nil && !full(len(out), limit); k, _ = c.Next() {
		if len(k) < 8 {
			return nil, fmt.Errorf("store: bad finished key %q", k)
		}
		if binary.BigEndian.Uint64(k) >= bound {
			break
		}
		out = append(out, string(k[8:]))
	}
	return out, nil
}

// TrimChanges collects the keys first and deletes them after, through the
// transaction's bucket handles: a cursor's own Delete skips entries, and
// every write must go through w.bucket.
func (w *writeTx) TrimChanges(keepFrom uint64, before time.Time, limit int) (int, error) {
	changes, err := w.bucket(bucketChanges)
	if err != nil {
		return 0, err
	}
	history, err := w.bucket(bucketHistory)
	if err != nil {
		return 0, err
	}
	var seqs, hist [][]byte
	c := changes.Cursor()
	for k, v := c.First(); k != nil && !full(len(seqs), limit); k, v = c.Next() {
		ch, err := w.change(k, v)
		if err != nil {
			return 0, fmt.Errorf("trim changelog: %w", err)
		}
		if ch.Seq >= keepFrom && !ch.At.Before(before) {
			break
		}
		seqs = append(seqs, bytes.Clone(k))
		if ch.Instance != "" {
			hist = append(hist, historyKey(ch.Instance, ch.Seq))
		}
	}
	if len(seqs) == 0 {
		return 0, nil
	}
	w.wrote = true
	for _, k := range hist {
		if err := history.Delete(k); err != nil {
			return 0, fmt.Errorf("trim changelog: history: %w", err)
		}
	}
	for _, k := range seqs {
		if err := changes.Delete(k); err != nil {
			return 0, fmt.Errorf("trim changelog: change %d: %w", binary.BigEndian.Uint64(k), err)
		}
	}
	return len(seqs), nil
}

func (w *writeTx) DeleteInstance(id string) error {
	in, err := w.Instance(id)
	if err != nil {
		return err
	}
	if in.Status != fsm.StatusFinal {
		return fmt.Errorf("store: delete instance %q: %w", id, &fsm.InvariantError{Msg: fmt.Sprintf("only a FINAL instance is deleted, it is %s", in.Status)})
	}
	history, err := w.bucket(bucketHistory)
	if err != nil {
		return err
	}
	prefix := appendStr(nil, id)
	var hist [][]byte
	c := history.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		hist = append(hist, bytes.Clone(k))
	}

	w.wrote = true
	keys := keysOf(&in)
	for _, ix := range []struct{ bucket, key []byte }{
		{bucketInstances, []byte(id)},
		{bucketByMachine, keys.byMachine},
		{bucketReady, keys.ready},
		{bucketReadyMachine, keys.readyMachine},
		{bucketReadyNode, keys.readyNode},
		{bucketDue, keys.due},
		{bucketFinished, keys.finished},
	} {
		if ix.key == nil {
			continue
		}
		b, err := w.bucket(ix.bucket)
		if err != nil {
			return err
		}
		if err := b.Delete(ix.key); err != nil {
			return fmt.Errorf("delete instance %q: %s: %w", id, ix.bucket, err)
		}
	}
	for _, k := range hist {
		if err := history.Delete(k); err != nil {
			return fmt.Errorf("delete instance %q: history: %w", id, err)
		}
	}
	return nil
}

// fillFinished builds the finished index of a file written before it
// existed, in the transaction that creates its bucket at Open. An
// unreadable record is left to Check and to the reads that meet it.
func fillFinished(tx *bbolt.Tx) error {
	sealed := tx.Bucket(bucketMeta).Get(keyChecksums) != nil
	finished := tx.Bucket(bucketFinished)
	var keys [][]byte
	err := tx.Bucket(bucketInstances).ForEach(func(k, v []byte) error {
		rec := v
		if sealed {
			var reason string
			if rec, reason = unseal(k, v); reason != "" {
				return nil
			}
		}
		in, err := store.DecodeInstance(rec)
		if err != nil {
			return nil
		}
		if key := keysOf(&in).finished; key != nil {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := finished.Put(k, nil); err != nil {
			return fmt.Errorf("index finished instances: %w", err)
		}
	}
	return nil
}
