package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// The store as the state machine of the replicated log.
//
// An Update does not commit what its functions write. The writer runs the
// functions of a batch on a read transaction whose buckets take their
// writes into an overlay (overlay.go) and record every write (put, delete,
// bucket sequence) into a write set, which it submits as one command of
// the log (writer.go). The log applies the command on every server
// (Apply), in log order, by replaying those writes: so every server holds
// the same records, the changelog sequence included, without running the
// engine again, and what the leader's clock and random draws decided is in
// the command as data.
//
// A write set is only valid on the state it was computed on. It names the
// write set it was computed after (its base) and its own id; Apply
// refuses, on every server alike, one whose base is not the last write set
// applied (errStale), and the writer computes it again. Within one leader
// that happens only after such a refusal (the write sets computed after
// the refused one are refused in turn); it catches a command computed by a
// leader that was deposed while a newer one wrote.

// Meta keys of the replicated state.
var (
	// keyApplied is the index of the last log entry applied.
	keyApplied = []byte("applied")
	// keyLastWrite names the last write set applied: its id (see
	// writer.go), or, for a write set of the previous release, its log
	// index.
	keyLastWrite = []byte("last_write")
	// keyMemberPrefix prefixes the gRPC address of a cluster member.
	keyMemberPrefix = []byte("member/")
)

// errStale refuses a write set computed on a state that has moved since.
var errStale = store.ErrStale

// Kinds of the writes of a write set.
const (
	opPut byte = iota + 1
	opDelete
	opSequence
)

// bucketID numbers the buckets of allBuckets in write sets.
var bucketID = func() map[string]byte {
	m := make(map[string]byte, len(allBuckets))
	for i, b := range allBuckets {
		m[string(b)] = byte(i)
	}
	return m
}()

// writeSet accumulates the encoded writes of one transaction.
type writeSet struct{ buf []byte }

func (ws *writeSet) add(kind, bucket byte, key []byte) {
	ws.buf = append(ws.buf, kind, bucket)
	ws.buf = binary.AppendUvarint(ws.buf, uint64(len(key)))
	ws.buf = append(ws.buf, key...)
}

// wbucket is a bucket of a write transaction: its writes go to the
// overlay and are recorded in the write set.
type wbucket struct {
	*obucket
	id byte
	ws *writeSet
}

func (b wbucket) Put(key, value []byte) error {
	if err := checkKV(key, value); err != nil {
		return err
	}
	b.put(key, value)
	b.ws.add(opPut, b.id, key)
	b.ws.buf = binary.AppendUvarint(b.ws.buf, uint64(len(value)))
	b.ws.buf = append(b.ws.buf, value...)
	return nil
}

func (b wbucket) Delete(key []byte) error {
	b.delete(key)
	b.ws.add(opDelete, b.id, key)
	return nil
}

func (b wbucket) NextSequence() (uint64, error) {
	n := b.Sequence() + 1
	b.setSequence(n)
	b.ws.add(opSequence, b.id, nil)
	b.ws.buf = binary.AppendUvarint(b.ws.buf, n)
	return n, nil
}

// checkKV refuses what bbolt's Put would refuse, so that a write set
// never holds a write that cannot apply.
func checkKV(key, value []byte) error {
	switch {
	case len(key) == 0:
		return bolterrors.ErrKeyRequired
	case len(key) > bbolt.MaxKeySize:
		return bolterrors.ErrKeyTooLarge
	case int64(len(value)) > bbolt.MaxValueSize:
		return bolterrors.ErrValueTooLarge
	}
	return nil
}

// bucket returns a bucket created at Open whose writes are recorded.
func (w *writeTx) bucket(name []byte) (wbucket, error) {
	b, err := w.boltBucket(name)
	if err != nil {
		return wbucket{}, err
	}
	return wbucket{obucket: w.ov.bucket(name, b), id: bucketID[string(name)], ws: w.ws}, nil
}

// writeCommand encodes the command of write set id, computed after write
// set prev.
func writeCommand(prev, id uint64, ws *writeSet) []byte {
	b := make([]byte, 0, 17+len(ws.buf))
	b = append(b, store.CommandWrite)
	b = binary.BigEndian.AppendUint64(b, prev)
	b = binary.BigEndian.AppendUint64(b, id)
	return append(b, ws.buf...)
}

// errMalformed refuses a command that does not decode. It cannot come from
// a proposer of this build: it means a damaged log or a mixed cluster.
func errMalformed(what string) error {
	return fmt.Errorf("store: malformed write command: %s", what)
}

// decodeWrite splits the write command of e into the write set it was
// computed after (its base), its own id and its writes. A write set of the
// previous release (CommandWriteAt) names write sets by log index.
func decodeWrite(e store.Entry) (base, id uint64, ops []byte, err error) {
	if e.Data[0] == store.CommandWriteAt {
		base, n := binary.Uvarint(e.Data[1:])
		if n <= 0 {
			return 0, 0, nil, errMalformed("no base")
		}
		return base, e.Index, e.Data[1+n:], nil
	}
	if len(e.Data) < 17 {
		return 0, 0, nil, errMalformed("no predecessor and id")
	}
	return binary.BigEndian.Uint64(e.Data[1:]), binary.BigEndian.Uint64(e.Data[9:]), e.Data[17:], nil
}

// forWrites calls fn for each write of a write set, in order: the kind,
// the bucket, the key, and the value (opPut) or sequence (opSequence).
func forWrites(p []byte, fn func(kind byte, bucket []byte, key, val []byte, seq uint64) error) error {
	uv := func() (uint64, error) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, errMalformed("truncated number")
		}
		p = p[n:]
		return v, nil
	}
	bytesOf := func() ([]byte, error) {
		n, err := uv()
		if err != nil {
			return nil, err
		}
		if n > uint64(len(p)) {
			return nil, errMalformed("truncated bytes")
		}
		b := p[:n:n]
		p = p[n:]
		return b, nil
	}
	for len(p) > 0 {
		if len(p) < 2 {
			return errMalformed("truncated write")
		}
		kind, id := p[0], int(p[1])
		p = p[2:]
		if id >= len(allBuckets) {
			return errMalformed(fmt.Sprintf("bucket %d", id))
		}
		key, err := bytesOf()
		if err != nil {
			return err
		}
		var val []byte
		var seq uint64
		switch kind {
		case opPut:
			val, err = bytesOf()
		case opDelete:
		case opSequence:
			seq, err = uv()
		default:
			err = errMalformed(fmt.Sprintf("write kind %d", kind))
		}
		if err != nil {
			return err
		}
		if err := fn(kind, allBuckets[id], key, val, seq); err != nil {
			return err
		}
	}
	return nil
}

// replay applies the writes of a write set to btx and returns the
// changelog entries it appended, in order.
func replay(btx *bbolt.Tx, ops []byte) (changes []fsm.Change, err error) {
	err = forWrites(ops, func(kind byte, name, key, val []byte, seq uint64) error {
		b := btx.Bucket(name)
		switch kind {
		case opPut:
			if err := b.Put(key, val); err != nil {
				return fmt.Errorf("store: apply put %s/%q: %w", name, key, err)
			}
			if bytes.Equal(name, bucketChanges) {
				rec, reason := unseal(key, val)
				if reason != "" {
					return errMalformed("change " + reason)
				}
				c, err := store.DecodeChange(rec)
				if err != nil {
					return err
				}
				changes = append(changes, c)
			}
		case opDelete:
			if err := b.Delete(key); err != nil {
				return fmt.Errorf("store: apply delete %s/%q: %w", name, key, err)
			}
		case opSequence:
			if err := b.SetSequence(seq); err != nil {
				return fmt.Errorf("store: apply sequence of %s: %w", name, err)
			}
		}
		return nil
	})
	return changes, err
}

// load lays the writes of a write set over btx.
func (o *overlay) load(btx *bbolt.Tx, ops []byte) error {
	return forWrites(ops, func(kind byte, name, key, val []byte, seq uint64) error {
		b := btx.Bucket(name)
		if b == nil {
			return fmt.Errorf("store: bucket %s missing", name)
		}
		ob := o.bucket(name, b)
		switch kind {
		case opPut:
			ob.put(key, val)
		case opDelete:
			ob.delete(key)
		case opSequence:
			ob.setSequence(seq)
		}
		return nil
	})
}

func getUint(b *bbolt.Bucket, key []byte) uint64 {
	if v := b.Get(key); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func putUint(b *bbolt.Bucket, key []byte, v uint64) error {
	return b.Put(key, binary.BigEndian.AppendUint64(nil, v))
}

var _ store.StateMachine = (*Store)(nil)

// AppliedIndex implements store.StateMachine.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// Apply implements store.StateMachine: it applies entries in one
// transaction, commits it and hands the changes they appended to the
// commit hook. Should the commit fail (disk full, a replaced file), no
// entry is skipped, since that would part this server from the others: it
// tries again, every few seconds, until it succeeds or the store closes,
// and meanwhile refuses new writes with that error (see stuck).
func (s *Store) Apply(entries []store.Entry) []error {
	res := make([]error, len(entries))
	for attempt := 0; ; attempt++ {
		err := s.apply(entries, res)
		if err == nil {
			s.setStuck(nil)
			return res
		}
		s.setStuck(err)
		if !s.sleepUnlessClosed(retryDelay(attempt)) {
			for i := range res {
				res[i] = store.ErrClosed
			}
			return res
		}
	}
}

func (s *Store) apply(entries []store.Entry, res []error) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if err := s.checkReplaced(); err != nil {
		return err
	}
	btx, err := s.db.Begin(true)
	if err != nil {
		return fmt.Errorf("store: begin transaction: %w", err)
	}
	meta := btx.Bucket(bucketMeta)
	applied, last := getUint(meta, keyApplied), getUint(meta, keyLastWrite)
	var changes []fsm.Change
	var members map[string]string // a copy, once a member command changes it
	for i, e := range entries {
		res[i] = nil
		if e.Index <= applied {
			continue
		}
		applied = e.Index
		if len(e.Data) == 0 {
			res[i] = errMalformed("empty command")
			continue
		}
		switch e.Data[0] {
		case store.CommandWrite, store.CommandWriteAt:
			base, id, ops, err := decodeWrite(e)
			if err != nil {
				res[i] = err
				continue
			}
			if base != last {
				res[i] = errStale
				continue
			}
			c, err := replay(btx, ops)
			if err != nil {
				// A write set that applied on its base where it was
				// computed applies here too: this is damage, not input.
				_ = btx.Rollback()
				s.log.Error("a write command of the log does not apply", "index", e.Index, "err", err)
				return err
			}
			changes = append(changes, c...)
			last = id
		case store.CommandMember:
			id, addr, err := store.DecodeMemberCommand(e.Data)
			if err != nil {
				res[i] = err
				continue
			}
			key := append(append([]byte(nil), keyMemberPrefix...), id...)
			if members == nil {
				members = maps.Clone(*s.members.Load())
			}
			if addr == "" {
				err = meta.Delete(key)
				delete(members, id)
			} else {
				err = meta.Put(key, []byte(addr))
				members[id] = addr
			}
			if err != nil {
				_ = btx.Rollback()
				return err
			}
		default:
			res[i] = errMalformed(fmt.Sprintf("command kind %q", e.Data[0]))
		}
	}
	if err := putUint(meta, keyApplied, applied); err != nil {
		_ = btx.Rollback()
		return err
	}
	if err := putUint(meta, keyLastWrite, last); err != nil {
		_ = btx.Rollback()
		return err
	}
	if err := s.commitTx(btx); err != nil {
		s.log.Error("commit", "err", err, "entries", len(entries))
		return err
	}
	s.commits.Add(1)
	s.applied.Store(applied)
	if members != nil {
		s.members.Store(&members)
	}
	if err := s.checkReplaced(); err != nil {
		// Committed into a file the next start will not see.
		return err
	}
	if len(changes) > 0 && s.opts.CommitHook != nil {
		s.opts.CommitHook(changes)
	}
	return nil
}

// retryDelay is how long Apply waits before its attempt+1st try.
func retryDelay(attempt int) (d time.Duration) {
	d = 100 * time.Millisecond << min(attempt, 5)
	return min(d, 3*time.Second)
}

// Rebase implements store.StateMachine.
func (s *Store) Rebase() error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if err := putUint(meta, keyApplied, 0); err != nil {
			return err
		}
		return putUint(meta, keyLastWrite, 0)
	})
	if err != nil {
		return err
	}
	s.applied.Store(0)
	return nil
}

// Members implements store.StateMachine. The records are kept in memory
// too (loaded at open and restore, updated by Apply), since the leader's
// address is looked up for every call a follower forwards.
func (s *Store) Members() (map[string]string, error) {
	return maps.Clone(*s.members.Load()), nil
}

// snapshot is a read transaction of the whole state.
type snapshot struct {
	tx    *bbolt.Tx
	index uint64
}

func (sn *snapshot) Index() uint64                      { return sn.index }
func (sn *snapshot) WriteTo(w io.Writer) (int64, error) { return sn.tx.WriteTo(w) }
func (sn *snapshot) Release()                           { _ = sn.tx.Rollback() }

// Snapshot implements store.StateMachine: a copy of the file as of the
// last applied entry, written from a read transaction while entries go on
// applying.
func (s *Store) Snapshot() (store.Snapshot, error) {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, err
	}
	return &snapshot{tx: tx, index: getUint(tx.Bucket(bucketMeta), keyApplied)}, nil
}

// Restore implements store.StateMachine: it writes the snapshot next to
// the file, checks it as Open would, and swaps it in. Reads wait for the
// swap; the commit hook's OnRestore tells those that follow the changelog
// that it jumped.
func (s *Store) Restore(r io.Reader) error {
	path := s.Path()
	tmp := path + ".restore"
	if err := writeFileSync(tmp, r); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("store: restore: %w", err)
	}
	if err := s.precheck(tmp); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("store: restore: the snapshot is damaged: %w", err)
	}
	if err := s.swap(path, tmp); err != nil {
		return err
	}
	s.log.Info("state restored from a snapshot", "path", path, "applied", s.applied.Load())
	if s.opts.OnRestore != nil {
		s.opts.OnRestore()
	}
	return nil
}

// swap replaces the open file at path by tmp, holding off every reader.
func (s *Store) swap(path, tmp string) error {
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: restore: close: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	db, err := openDB(path, s.boltOptions())
	if err != nil {
		return fmt.Errorf("store: restore: reopen: %w", err)
	}
	s.db = db
	if s.file, err = statID(path); err != nil {
		return err
	}
	if err := s.initBuckets(); err != nil {
		return fmt.Errorf("database %s: %w", path, err)
	}
	if err := s.loadReplicated(); err != nil {
		return err
	}
	return nil
}

// loadReplicated reads the applied index and the member records from the
// file.
func (s *Store) loadReplicated() error {
	return s.db.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		s.applied.Store(getUint(meta, keyApplied))
		m := map[string]string{}
		c := meta.Cursor()
		for k, v := c.Seek(keyMemberPrefix); k != nil && bytes.HasPrefix(k, keyMemberPrefix); k, v = c.Next() {
			m[string(k[len(keyMemberPrefix):])] = string(v)
		}
		s.members.Store(&m)
		return nil
	})
}

func writeFileSync(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !strings.Contains(err.Error(), "invalid argument") {
		return err
	}
	return nil
}

// localLog is the log of a store that no cluster runs: each command
// applies as the next entry, in the order submitted, as soon as the one
// before it applied. Tools that open a file on their own and the store's
// tests use it; the server always runs the replicated log.
type localLog struct {
	s *Store
	q inOrder
}

func (l *localLog) Submit(_ context.Context, data []byte) func() error {
	return l.q.queue(nil, func() error { return l.s.applyNext(data) })
}

// applyNext applies data as the entry after the last one applied.
func (s *Store) applyNext(data []byte) error {
	return s.Apply([]store.Entry{{Index: s.AppliedIndex() + 1, Data: data}})[0]
}

// inOrder runs functions on goroutines of their own, one after the
// other in the order they were queued.
type inOrder struct {
	mu   sync.Mutex
	tail chan struct{} // closed once the last function queued returned
}

// queue queues fn and returns a function that waits for it and returns
// its error. first, when set, runs at once, before fn waits its turn.
func (q *inOrder) queue(first func(), fn func() error) (wait func() error) {
	q.mu.Lock()
	prev, done := q.tail, make(chan struct{})
	q.tail = done
	q.mu.Unlock()
	var err error
	go func() {
		defer close(done)
		if first != nil {
			first()
		}
		if prev != nil {
			<-prev
		}
		err = fn()
	}()
	return func() error {
		<-done
		return err
	}
}
