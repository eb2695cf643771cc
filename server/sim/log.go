package sim

import (
	"bytes"
	"context"

	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

// snapEvery is how many entries the simulated log appends between two
// snapshots of the state.
const snapEvery = 64

// simLog is the replicated log as the simulator runs it, in the order a
// one-server cluster does: each write command is appended to the log,
// which survives a crash as a log on disk does, and applied to the store
// at once. Every snapEvery entries it takes a snapshot of the state and
// drops the entries the snapshot holds. A crash that loses the state file
// restarts from the last snapshot and the entries after it (rebuild).
type simLog struct {
	st *bolt.Store
	// last is the index of the last entry appended.
	last uint64
	// entries are those after the snapshot.
	entries []store.Entry
	snap    []byte
	// Snapshots and Rebuilds count what the log did.
	snapshots, rebuilds int
}

// Submit appends data and applies it at once.
func (l *simLog) Submit(_ context.Context, data []byte) func() error {
	err := l.append(data)
	return func() error { return err }
}

func (l *simLog) append(data []byte) error {
	l.last++
	e := store.Entry{Index: l.last, Term: 1, Data: bytes.Clone(data)}
	l.entries = append(l.entries, e)
	err := l.st.Apply([]store.Entry{e})[0]
	if len(l.entries) >= snapEvery {
		sn, serr := l.st.Snapshot()
		if serr != nil {
			return serr
		}
		var buf bytes.Buffer
		_, werr := sn.WriteTo(&buf)
		idx := sn.Index()
		sn.Release()
		if werr != nil {
			return werr
		}
		l.snap = buf.Bytes()
		l.snapshots++
		keep := l.entries[:0]
		for _, e := range l.entries {
			if e.Index > idx {
				keep = append(keep, e)
			}
		}
		l.entries = keep
	}
	return err
}

// rebuild makes st, a store over a new empty file, the state the log
// holds: the last snapshot, then every entry after it.
func (l *simLog) rebuild(st *bolt.Store) error {
	l.rebuilds++
	if l.snap != nil {
		if err := st.Restore(bytes.NewReader(l.snap)); err != nil {
			return err
		}
	}
	for _, err := range st.Apply(l.entries) {
		if err != nil {
			return err
		}
	}
	return nil
}
