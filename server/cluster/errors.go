package cluster

import (
	"errors"
	"fmt"
)

var (
	// ErrUnknownOutcome says a proposal was appended to the log but the
	// node could not learn whether it committed: leadership was lost, the
	// node shut down or the context ended while the entry was in flight.
	// The entry may still commit (and apply) later; a retry must be safe
	// to apply twice or check first.
	ErrUnknownOutcome = errors.New("the outcome of the proposal is unknown: it may still commit")
	// ErrNoLeader says no leader is known (an election is under way) or
	// the leader's gRPC address is not recorded yet.
	ErrNoLeader = errors.New("no leader known")
	// ErrNoSuchMember says a server id is not in the cluster's configuration.
	ErrNoSuchMember = errors.New("no such cluster member")
	// ErrShutdown says the node was shut down.
	ErrShutdown = errors.New("cluster node shut down")
	// ErrInvalid is matched by every *InvalidError.
	ErrInvalid = errors.New("invalid argument")
)

// InvalidError names the setting or argument that is wrong.
type InvalidError struct {
	// Field is the setting or argument: id, raft_addr, advertise,
	// grpc_addr, dir, peers, and so on.
	Field string
	// Reason says what is wrong with it.
	Reason string
}

func (e *InvalidError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Unwrap() error { return ErrInvalid }
