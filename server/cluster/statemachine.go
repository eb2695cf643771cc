// Package cluster runs the replicated log of dfsmr: a hashicorp/raft node
// whose finite state machine is the server's bbolt state. Every write of
// the server is an entry of this log, applied in log order on every
// server; the leader proposes, followers apply what it committed.
package cluster

import "errors"

// ErrNotLeader is returned by Propose on a server that is not the leader;
// it is wrapped in a *NotLeaderError naming the leader when one is known.
var ErrNotLeader = errors.New("not the leader")

// NotLeaderError says who leads, when known.
type NotLeaderError struct {
	// LeaderID and LeaderAddr name the leader's raft id and raft address;
	// both are empty when no leader is known (an election is under way).
	LeaderID, LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "not the leader, and no leader is known (an election is under way)"
	}
	return "not the leader; the leader is " + e.LeaderID + " at " + e.LeaderAddr
}

// Is makes a NotLeaderError match ErrNotLeader.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
