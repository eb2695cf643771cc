package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// errTxDone is returned when a transaction is used after its function
// returned.
var errTxDone = errors.New("store: transaction used after its function returned")

// readTx implements store.ReadTx over a bbolt transaction. Everything it
// returns is decoded into fresh memory: bbolt's pages are only valid until
// the transaction ends.
type readTx struct {
	tx *bbolt.Tx
	// ov, when set, is laid over tx: the writer's transactions read
	// through it (see overlay.go).
	ov   *overlay
	done bool
}

var _ store.ReadTx = (*readTx)(nil)

// bucket returns a bucket created at Open, as the transaction reads it.
func (r *readTx) bucket(name []byte) (rbucket, error) {
	b, err := r.boltBucket(name)
	if err != nil {
		return nil, err
	}
	if r.ov != nil {
		return r.ov.bucket(name, b), nil
	}
	return plain{b}, nil
}

// boltBucket returns the bbolt bucket name, created at Open.
func (r *readTx) boltBucket(name []byte) (*bbolt.Bucket, error) {
	if r.done {
		return nil, errTxDone
	}
	b := r.tx.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("store: bucket %s missing", name)
	}
	return b, nil
}

// full reports whether n results reach limit; limit <= 0 means no limit.
func full(n, limit int) bool { return limit > 0 && n >= limit }

func (r *readTx) Machine(id string, version uint32) (store.MachineRecord, error) {
	b, err := r.bucket(bucketMachines)
	if err != nil {
		return store.MachineRecord{}, err
	}
	var k, v []byte
	if version != 0 {
		k = machineKey(id, version)
		v = b.Get(k)
	} else {
		k, v = latestMachine(b.Cursor(), id)
	}
	if v == nil && version == 0 {
		return store.MachineRecord{}, fmt.Errorf("machine %q: %w", id, store.ErrNotFound)
	}
	if v == nil {
		return store.MachineRecord{}, fmt.Errorf("machine %q version %d: %w", id, version, store.ErrNotFound)
	}
	return r.machine(k, v)
}

func (r *readTx) LatestMachineVersion(id string) (uint32, error) {
	b, err := r.bucket(bucketMachines)
	if err != nil {
		return 0, err
	}
	k, _ := latestMachine(b.Cursor(), id)
	if k == nil {
		return 0, fmt.Errorf("machine %q: %w", id, store.ErrNotFound)
	}
	return binary.BigEndian.Uint32(k[len(k)-4:]), nil
}

func (r *readTx) machine(k, v []byte) (store.MachineRecord, error) {
	rec, err := r.record(bucketMachines, k, v)
	if err != nil {
		return store.MachineRecord{}, err
	}
	return store.DecodeMachine(rec)
}

// latestMachine returns the key and record of the highest version of id,
// or nils: the key before the first key past every id sep version key.
func latestMachine(c cursor, id string) (k, v []byte) {
	end := []byte(id + "\x01")
	k, _ = c.Seek(end)
	if k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	if len(k) != len(id)+1+4 || !bytes.HasPrefix(k, []byte(id)) || k[len(id)] != sep {
		return nil, nil
	}
	return k, v
}

func (r *readTx) MachineVersions(id string) ([]store.MachineRecord, error) {
	b, err := r.bucket(bucketMachines)
	if err != nil {
		return nil, err
	}
	prefix := appendStr(nil, id)
	var out []store.MachineRecord
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		m, err := r.machine(k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("machine %q: %w", id, store.ErrNotFound)
	}
	return out, nil
}

func (r *readTx) Machines(after string, limit int) ([]store.MachineRecord, error) {
	b, err := r.bucket(bucketMachines)
	if err != nil {
		return nil, err
	}
	var out []store.MachineRecord
	c := b.Cursor()
	var k []byte
	if after == "" {
		k, _ = c.First()
	} else {
		// Every key of after itself is after sep ...; "after\x01" is past
		// them and before any longer id.
		k, _ = c.Seek([]byte(after + "\x01"))
	}
	for k != nil && !full(len(out), limit) {
		if len(k) < 1+4 || k[len(k)-5] != sep {
			return nil, fmt.Errorf("store: bad machine key %q", k)
		}
		id := string(k[:len(k)-5])
		mk, v := latestMachine(c, id)
		if v == nil {
			return nil, fmt.Errorf("store: machine %q vanished", id)
		}
		m, err := r.machine(mk, v)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
		k, _ = c.Seek([]byte(id + "\x01"))
	}
	return out, nil
}

func (r *readTx) Instance(id string) (fsm.Instance, error) {
	b, err := r.bucket(bucketInstances)
	if err != nil {
		return fsm.Instance{}, err
	}
	v := b.Get([]byte(id))
	if v == nil {
		return fsm.Instance{}, fmt.Errorf("instance %q: %w", id, store.ErrNotFound)
	}
	return r.instance([]byte(id), v)
}

func (r *readTx) instance(k, v []byte) (fsm.Instance, error) {
	rec, err := r.record(bucketInstances, k, v)
	if err != nil {
		return fsm.Instance{}, err
	}
	return store.DecodeInstance(rec)
}

func (r *readTx) Instances(f store.InstanceFilter, after string, limit int) ([]fsm.Instance, error) {
	instances, err := r.bucket(bucketInstances)
	if err != nil {
		return nil, err
	}
	var out []fsm.Instance
	add := func(k, v []byte) error {
		in, err := r.instance(k, v)
		if err != nil {
			return err
		}
		if (f.Machine == "" || in.Machine == f.Machine) &&
			(f.Node == "" || in.Node == f.Node) &&
			(f.Status == fsm.StatusUnspecified || in.Status == f.Status) {
			out = append(out, in)
		}
		return nil
	}

	if f.Machine == "" {
		c := instances.Cursor()
		k, v := c.Seek([]byte(after))
		if k != nil && after != "" && string(k) == after {
			k, v = c.Next()
		}
		for ; k != nil && !full(len(out), limit); k, v = c.Next() {
			if err := add(k, v); err != nil {
				return nil, err
			}
		}
		return out, nil
	}

	// Only this machine's instances, through its index.
	byMachine, err := r.bucket(bucketByMachine)
	if err != nil {
		return nil, err
	}
	prefix := appendStr(nil, f.Machine)
	start := append(prefix[:len(prefix):len(prefix)], after...)
	c := byMachine.Cursor()
	k, _ := c.Seek(start)
	if k != nil && after != "" && bytes.Equal(k, start) {
		k, _ = c.Next()
	}
	for ; k != nil && bytes.HasPrefix(k, prefix) && !full(len(out), limit); k, _ = c.Next() {
		id := k[len(prefix):]
		v := instances.Get(id)
		if v == nil {
			return nil, fmt.Errorf("store: machine index names missing instance %q", id)
		}
		if err := add(id, v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (r *readTx) History(id string) ([]fsm.Change, error) {
	return r.HistoryFrom(id, 0, 0)
}

func (r *readTx) HistoryFrom(id string, from uint64, limit int) ([]fsm.Change, error) {
	history, err := r.bucket(bucketHistory)
	if err != nil {
		return nil, err
	}
	changes, err := r.bucket(bucketChanges)
	if err != nil {
		return nil, err
	}
	prefix := appendStr(nil, id)
	var out []fsm.Change
	c := history.Cursor()
	for k, _ := c.Seek(historyKey(id, from)); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if limit > 0 && len(out) == limit {
			break
		}
		seq := k[len(prefix):]
		if len(seq) != 8 {
			continue // a longer id that starts with id sep: impossible, ids have no sep
		}
		v := changes.Get(seq)
		if v == nil {
			return nil, fmt.Errorf("store: history of %q names missing change %d", id, binary.BigEndian.Uint64(seq))
		}
		ch, err := r.change(seq, v)
		if err != nil {
			return nil, err
		}
		out = append(out, ch)
	}
	return out, nil
}

func (r *readTx) change(k, v []byte) (fsm.Change, error) {
	rec, err := r.record(bucketChanges, k, v)
	if err != nil {
		return fsm.Change{}, err
	}
	return store.DecodeChange(rec)
}

func (r *readTx) Ready(f store.ReadyFilter, limit int) ([]string, error) {
	var (
		name   []byte
		prefix []byte
	)
	switch {
	case f.Machine == "" && f.Node != "":
		return nil, fmt.Errorf("store: ready filter: node %q needs a machine", f.Node)
	case f.Machine == "":
		name = bucketReady
	case f.Node == "":
		name, prefix = bucketReadyMachine, appendStr(nil, f.Machine)
	default:
		name, prefix = bucketReadyNode, appendStr(appendStr(nil, f.Machine), f.Node)
	}
	b, err := r.bucket(name)
	if err != nil {
		return nil, err
	}
	var out []string
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && !full(len(out), limit); k, _ = c.Next() {
		if len(k) < len(prefix)+readyKeyLen {
			return nil, fmt.Errorf("store: bad ready key %q", k)
		}
		out = append(out, string(k[len(prefix)+readyKeyLen:]))
	}
	return out, nil
}

func (r *readTx) Due(before time.Time, limit int) ([]store.Due, error) {
	b, err := r.bucket(bucketDue)
	if err != nil {
		return nil, err
	}
	bound := timeKey(before)
	var out []store.Due
	c := b.Cursor()
	for k, _ := c.First(); k != nil && !full(len(out), limit); k, _ = c.Next() {
		d, err := dueFromKey(k)
		if err != nil {
			return nil, err
		}
		if binary.BigEndian.Uint64(k) > bound {
			break
		}
		out = append(out, d)
	}
	return out, nil
}

func (r *readTx) NextDue() (store.Due, bool, error) {
	b, err := r.bucket(bucketDue)
	if err != nil {
		return store.Due{}, false, err
	}
	k, _ := b.Cursor().First()
	if k == nil {
		return store.Due{}, false, nil
	}
	d, err := dueFromKey(k)
	return d, err == nil, err
}

func dueFromKey(k []byte) (store.Due, error) {
	if len(k) < 8 {
		return store.Due{}, fmt.Errorf("store: bad due key %q", k)
	}
	return store.Due{At: timeFromKey(binary.BigEndian.Uint64(k)), ID: string(k[8:])}, nil
}

func (r *readTx) Changes(from uint64, limit int) ([]fsm.Change, error) {
	b, err := r.bucket(bucketChanges)
	if err != nil {
		return nil, err
	}
	var out []fsm.Change
	c := b.Cursor()
	for k, v := c.Seek(seqKey(from)); k != nil && !full(len(out), limit); k, v = c.Next() {
		ch, err := r.change(k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, ch)
	}
	return out, nil
}

func (r *readTx) Head() (uint64, error) {
	b, err := r.bucket(bucketChanges)
	if err != nil {
		return 0, err
	}
	return b.Sequence(), nil
}

func (r *readTx) DurationSamples(machine string, version uint32, node string) ([]time.Duration, error) {
	b, err := r.bucket(bucketDurations)
	if err != nil {
		return nil, err
	}
	k := durationsKey(machine, version, node)
	v := b.Get(k)
	if v == nil {
		return nil, nil
	}
	rec, err := r.record(bucketDurations, k, v)
	if err != nil {
		return nil, err
	}
	ds, err := store.DecodeDurations(rec)
	if err != nil {
		return nil, fmt.Errorf("lease durations of %s@%d node %q: %w", machine, version, node, err)
	}
	return ds, nil
}

func (r *readTx) Breaker(machine string) (fsm.Breaker, error) {
	b, err := r.bucket(bucketBreakers)
	if err != nil {
		return fsm.Breaker{}, err
	}
	v := b.Get([]byte(machine))
	if v == nil {
		return fsm.Breaker{}, nil
	}
	rec, err := r.record(bucketBreakers, []byte(machine), v)
	if err != nil {
		return fsm.Breaker{}, err
	}
	br, err := store.DecodeBreaker(rec)
	if err != nil {
		return fsm.Breaker{}, fmt.Errorf("breaker of machine %q: %w", machine, err)
	}
	return br, nil
}

// writeTx implements store.Tx. It records whether its function wrote, so
// that the writer knows whether a failed function dirtied the shared
// transaction, and the changes it appended, for the commit hook.
type writeTx struct {
	readTx
	wrote bool
	// ws records what the transaction writes (see replicate.go).
	ws *writeSet
}

var _ store.Tx = (*writeTx)(nil)

func (w *writeTx) PutMachine(rec store.MachineRecord) error {
	if err := checkName("machine id", rec.ID); err != nil {
		return err
	}
	if rec.Version == 0 {
		return fmt.Errorf("store: put machine %q: version 0 is reserved for \"latest\"", rec.ID)
	}
	b, err := w.bucket(bucketMachines)
	if err != nil {
		return err
	}
	key := machineKey(rec.ID, rec.Version)
	if b.Get(key) != nil {
		return fmt.Errorf("store: put machine %q: version %d already exists", rec.ID, rec.Version)
	}
	w.wrote = true
	return b.Put(key, seal(key, store.AppendMachine(nil, &rec)))
}

func (w *writeTx) PutInstance(in fsm.Instance) error {
	if err := checkInstance(&in); err != nil {
		return err
	}
	instances, err := w.bucket(bucketInstances)
	if err != nil {
		return err
	}
	id := []byte(in.ID)
	rec := store.AppendInstance(nil, &in)

	var old *fsm.Instance
	if v := instances.Get(id); v != nil {
		prev, err := w.record(bucketInstances, id, v)
		if err != nil {
			return fmt.Errorf("put instance %q: previous record: %w", in.ID, err)
		}
		if bytes.Equal(prev, rec) {
			return nil // nothing changes, not even an index
		}
		o, err := store.DecodeInstance(prev)
		if err != nil {
			return fmt.Errorf("put instance %q: previous record: %w", in.ID, err)
		}
		if err := checkSuccessor(&o, &in); err != nil {
			return err
		}
		old = &o
	}

	w.wrote = true
	if err := instances.Put(id, seal(id, rec)); err != nil {
		return fmt.Errorf("put instance %q: %w", in.ID, err)
	}
	was, now := keysOf(old), keysOf(&in)
	for _, ix := range []struct {
		bucket   []byte
		was, now []byte
	}{
		{bucketByMachine, was.byMachine, now.byMachine},
		{bucketReady, was.ready, now.ready},
		{bucketReadyMachine, was.readyMachine, now.readyMachine},
		{bucketReadyNode, was.readyNode, now.readyNode},
		{bucketDue, was.due, now.due},
		{bucketFinished, was.finished, now.finished},
	} {
		if bytes.Equal(ix.was, ix.now) {
			continue
		}
		b, err := w.bucket(ix.bucket)
		if err != nil {
			return err
		}
		if ix.was != nil {
			if err := b.Delete(ix.was); err != nil {
				return fmt.Errorf("put instance %q: index %s: %w", in.ID, ix.bucket, err)
			}
		}
		if ix.now != nil {
			if err := b.Put(ix.now, nil); err != nil {
				return fmt.Errorf("put instance %q: index %s: %w", in.ID, ix.bucket, err)
			}
		}
	}
	return nil
}

func (w *writeTx) AppendChange(c fsm.Change) (uint64, error) {
	if c.Instance != "" {
		if err := checkName("change instance", c.Instance); err != nil {
			return 0, err
		}
	}
	changes, err := w.bucket(bucketChanges)
	if err != nil {
		return 0, err
	}
	history, err := w.bucket(bucketHistory)
	if err != nil {
		return 0, err
	}
	w.wrote = true
	// The sequence lives in the bucket and is taken inside the
	// transaction: a rollback gives the number back, so there is no gap.
	seq, err := changes.NextSequence()
	if err != nil {
		return 0, fmt.Errorf("append change: %w", err)
	}
	key := seqKey(seq)
	if changes.Get(key) != nil {
		return 0, fmt.Errorf("append change: %w", &fsm.InvariantError{Msg: fmt.Sprintf("change sequence %d assigned twice", seq)})
	}
	c.Seq = seq
	if err := changes.Put(key, seal(key, store.AppendChange(nil, &c))); err != nil {
		return 0, fmt.Errorf("append change %d: %w", seq, err)
	}
	if c.Instance != "" {
		if err := history.Put(historyKey(c.Instance, seq), nil); err != nil {
			return 0, fmt.Errorf("append change %d: history: %w", seq, err)
		}
	}
	return seq, nil
}

func (w *writeTx) AddDurationSample(machine string, version uint32, node string, d time.Duration) error {
	if err := checkName("machine id", machine); err != nil {
		return err
	}
	if err := checkName("node", node); err != nil {
		return err
	}
	switch {
	case version == 0:
		return fmt.Errorf("store: add duration sample of %q: version 0 is reserved for \"latest\"", machine)
	case d < 0:
		return fmt.Errorf("store: add duration sample of %s@%d node %q: negative duration %v", machine, version, node, d)
	}
	ds, err := w.DurationSamples(machine, version, node)
	if err != nil {
		return err
	}
	ds = append(ds, d)
	if n := len(ds) - store.MaxDurationSamples; n > 0 {
		ds = ds[n:]
	}
	b, err := w.bucket(bucketDurations)
	if err != nil {
		return err
	}
	w.wrote = true
	key := durationsKey(machine, version, node)
	if err := b.Put(key, seal(key, store.AppendDurations(nil, ds))); err != nil {
		return fmt.Errorf("add duration sample of %s@%d node %q: %w", machine, version, node, err)
	}
	return nil
}

func (w *writeTx) PutBreaker(machine string, br fsm.Breaker) error {
	if err := checkName("machine id", machine); err != nil {
		return err
	}
	if !br.Valid() {
		return fmt.Errorf("store: put breaker of %q: invalid state %+v", machine, br)
	}
	b, err := w.bucket(bucketBreakers)
	if err != nil {
		return err
	}
	w.wrote = true
	if err := b.Put([]byte(machine), seal([]byte(machine), store.AppendBreaker(nil, &br))); err != nil {
		return fmt.Errorf("put breaker of machine %q: %w", machine, err)
	}
	return nil
}

// checkName rejects names the key layout cannot hold.
func checkName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("store: %s is empty", what)
	case strings.IndexByte(s, sep) >= 0:
		return fmt.Errorf("store: %s %q contains a NUL byte", what, s)
	}
	return nil
}

func checkInstance(in *fsm.Instance) error {
	if err := checkName("instance id", in.ID); err != nil {
		return err
	}
	if err := checkName("instance machine", in.Machine); err != nil {
		return fmt.Errorf("instance %q: %w", in.ID, err)
	}
	if err := checkName("instance node", in.Node); err != nil {
		return fmt.Errorf("instance %q: %w", in.ID, err)
	}
	if in.Status < fsm.StatusWaiting || in.Status > fsm.StatusHeld {
		return fmt.Errorf("store: instance %q: invalid status %d", in.ID, in.Status)
	}
	return nil
}

// checkSuccessor asserts the invariants between an instance's stored state
// and the one that replaces it: a final instance never changes, but for an
// operator's retry out of dfsmr.failed (one change, to a working status;
// see fsm.RetryFailed), and a fencing token never goes down. Breaking them
// is a bug upstream; the store refuses the write so that it cannot reach
// the disk.
func checkSuccessor(old, in *fsm.Instance) error {
	retried := old.Node == fsm.NodeFailed && in.Status != fsm.StatusFinal && in.Rev == old.Rev+1
	switch {
	case old.Status == fsm.StatusFinal && !retried:
		return fmt.Errorf("put instance %q: %w", in.ID, &fsm.InvariantError{Msg: "a final instance changed"})
	case in.Token < old.Token:
		return fmt.Errorf("put instance %q: %w", in.ID, &fsm.InvariantError{
			Msg: fmt.Sprintf("fencing token went down from %d to %d", old.Token, in.Token)})
	}
	return nil
}
