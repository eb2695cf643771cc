package store

import (
	"context"
	"errors"
	"io"
)

// The replicated log. Every write of the server is a command of a log
// (package cluster runs it with raft): Update runs its functions against
// the state as applied so far, turns what they wrote into a command and
// proposes it; the log commits it and applies it, in log order, on every
// server, through the StateMachine the store is.

// Proposer appends commands to the log.
type Proposer interface {
	// Submit appends data to the log, after every command submitted
	// before it, and returns a function that waits until the entry
	// applied on this server and returns the StateMachine's result for
	// it. The wait fails, with nothing appended, on a server that cannot
	// propose (cluster.ErrNotLeader). Calls of Submit must not overlap:
	// their order is the log's.
	Submit(ctx context.Context, data []byte) (wait func() error)
}

// Entry is one committed command of the log, handed to the StateMachine in
// log order.
type Entry struct {
	// Index and Term are the entry's place in the log.
	Index, Term uint64
	// Data is the command as proposed.
	Data []byte
}

// StateMachine is what the log applies its entries to: the server's state.
// The log calls it from one goroutine at a time.
type StateMachine interface {
	// Apply applies entries, in order, and returns one result per entry:
	// nil when it applied, or the reason it did not (a command the state
	// refuses, deterministically on every server). An entry whose Index is
	// at or below AppliedIndex is already applied and is skipped (nil).
	// Apply returns only once the results are durable.
	Apply(entries []Entry) []error
	// AppliedIndex is the index of the last entry applied (0: none).
	AppliedIndex() uint64
	// Snapshot captures the state as of AppliedIndex. It is called
	// between Apply calls; the returned Snapshot may be written while
	// later entries apply.
	Snapshot() (Snapshot, error)
	// Restore replaces the whole state with the one a Snapshot wrote.
	Restore(r io.Reader) error
	// Rebase makes the state the first state of a new log: AppliedIndex
	// becomes 0, the records stay. A server that starts a new cluster
	// from a state file of another log (a restored backup) calls it.
	Rebase() error
	// Members returns the gRPC address of every member recorded by a
	// MemberCommand, by raft server id.
	Members() (map[string]string, error)
}

// Snapshot is a point-in-time copy of the state.
type Snapshot interface {
	// Index is the last entry the snapshot includes.
	Index() uint64
	// WriteTo writes the snapshot.
	WriteTo(w io.Writer) (int64, error)
	// Release frees what the snapshot holds; it is called once, after
	// WriteTo or instead of it.
	Release()
}

// Members: the gRPC address of every member of the cluster lives in the
// replicated state, so that any server can tell a client, or forward a
// call to, the leader's address.

// MemberCommand returns the command that records the gRPC address of the
// cluster member id (raft server id); an empty addr removes the record.
func MemberCommand(id, addr string) []byte {
	b := append([]byte{CommandMember}, byte(len(id)))
	b = append(b, id...)
	return append(b, addr...)
}

// DecodeMemberCommand is the inverse of MemberCommand.
func DecodeMemberCommand(data []byte) (id, addr string, err error) {
	if len(data) < 2 || data[0] != CommandMember || len(data) < 2+int(data[1]) {
		return "", "", errors.New("store: malformed member command")
	}
	n := int(data[1])
	return string(data[2 : 2+n]), string(data[2+n:]), nil
}

// The first byte of every command says its kind.
const (
	// CommandWrite is a write set: the records a batch of Updates wrote,
	// computed on the state that the write set it names as its
	// predecessor left.
	CommandWrite byte = 'W'
	// CommandWriteAt is a write set computed on the state as of a log
	// index, as servers of the previous release wrote them; they still
	// apply.
	CommandWriteAt byte = 'w'
	// CommandMember records a member's gRPC address (MemberCommand).
	CommandMember byte = 'm'
)
