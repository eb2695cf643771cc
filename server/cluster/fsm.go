package cluster

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/dfsmr/dfsmr/server/store"
)

// fsm adapts a store.StateMachine to raft: batches of committed commands
// go to StateMachine.Apply in one call (one commit of the state), the
// other kinds of entries (configuration changes) only advance the index.
type fsm struct {
	sm store.StateMachine

	mu       sync.Mutex
	applied  uint64        // the last entry of the last batch applied, or the state's index after a restore
	advanced chan struct{} // closed and replaced whenever applied moves
}

var _ raft.BatchingFSM = (*fsm)(nil)

func newFSM(sm store.StateMachine) *fsm {
	return &fsm{sm: sm, applied: sm.AppliedIndex(), advanced: make(chan struct{})}
}

func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	resp := make([]any, len(logs))
	entries := make([]store.Entry, 0, len(logs))
	at := make([]int, 0, len(logs))
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			entries = append(entries, store.Entry{Index: l.Index, Term: l.Term, Data: l.Data})
			at = append(at, i)
		}
	}
	if len(entries) > 0 {
		errs := f.sm.Apply(entries)
		if len(errs) != len(entries) {
			panic(fmt.Sprintf("cluster: the state machine returned %d results for %d entries", len(errs), len(entries)))
		}
		for j, err := range errs {
			if err != nil {
				resp[at[j]] = err
			}
		}
	}
	if len(logs) > 0 {
		// After a restart raft hands over again the entries after its
		// snapshot that the state holds already: applied stays.
		f.setApplied(max(f.appliedIndex(), logs[len(logs)-1].Index))
	}
	return resp
}

func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

func (f *fsm) setApplied(index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = index
	close(f.advanced)
	f.advanced = make(chan struct{})
}

// waitApplied returns once the entry at index was applied.
func (f *fsm) waitApplied(ctx context.Context, index uint64) error {
	for {
		f.mu.Lock()
		applied, advanced := f.applied, f.advanced
		f.mu.Unlock()
		if applied >= index {
			return nil
		}
		select {
		case <-advanced:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *fsm) appliedIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// A snapshot is a header, then what store.Snapshot.WriteTo wrote. The
// header holds the state's applied index, which may be below raft's index
// of the snapshot (raft counts the entries that are not commands too): at
// start, the state is restored from the snapshot only when it is behind
// the snapshot's state.
const snapshotMagic = "dfsmr-snapshot-1"

const snapshotHeaderLen = len(snapshotMagic) + 8

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	snap, err := f.sm.Snapshot()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{snap: snap}, nil
}

type fsmSnapshot struct{ snap store.Snapshot }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	header := binary.BigEndian.AppendUint64([]byte(snapshotMagic), s.snap.Index())
	_, err := sink.Write(header)
	if err == nil {
		_, err = s.snap.WriteTo(sink)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.snap.Release() }

// readSnapshotHeader reads the header and returns the state's index.
func readSnapshotHeader(r io.Reader) (uint64, error) {
	var header [snapshotHeaderLen]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return 0, fmt.Errorf("read snapshot header: %w", err)
	}
	if string(header[:len(snapshotMagic)]) != snapshotMagic {
		return 0, fmt.Errorf("not a dfsmr snapshot")
	}
	return binary.BigEndian.Uint64(header[len(snapshotMagic):]), nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if _, err := readSnapshotHeader(rc); err != nil {
		return err
	}
	if err := f.sm.Restore(rc); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	f.setApplied(f.sm.AppliedIndex())
	return nil
}
