package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/raft"
)

// aloneTimeout replaces raft's default timeouts on a Solo node that starts
// as the only voter: it has nobody to hear from, so it elects itself after
// this instead of after HeartbeatTimeout (a one-server dfsmrd serves
// writes at once). The node keeps them until it restarts: should voters
// be added meanwhile (it warns then), it leads them with these timeouts,
// which suit loopback and a LAN (heartbeats every 10 ms; the leader steps
// down when a quorum has not answered for 100 ms); pre-vote keeps its
// early elections from disturbing a cluster with a live leader. A restart
// gives it the configured timeouts.
const aloneTimeout = 100 * time.Millisecond

// alone reports whether the configuration raft has stored names this node
// as its only voter.
func alone(rc *raft.Config, f raft.FSM, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore, trans raft.Transport) bool {
	c := *rc
	conf, err := raft.GetConfiguration(&c, f, logs, stable, snaps, trans)
	if err != nil {
		return false
	}
	return onlyVoter(conf, rc.LocalID)
}

func onlyVoter(conf raft.Configuration, id raft.ServerID) bool {
	voters, self := 0, false
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			voters++
			self = self || s.ID == id
		}
	}
	return voters == 1 && self
}

// Alone reports whether this node is the only voter of its cluster.
func (n *Node) Alone() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	return onlyVoter(f.Configuration(), raft.ServerID(n.cfg.ID))
}

// Barrier waits until every entry committed before the call is applied on
// this node, the leader (*NotLeaderError elsewhere).
func (n *Node) Barrier(ctx context.Context) error {
	return n.wait(ctx, n.raft.Barrier(enqueueTimeout(ctx)), true)
}

// dialAddrs is a raft.ServerAddressProvider of Config.Dial; raft dials
// the advertised address of a member it does not name.
type dialAddrs map[string]string

func (d dialAddrs) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	if a, ok := d[string(id)]; ok {
		return raft.ServerAddress(a), nil
	}
	return "", errNoDialAddr
}

var errNoDialAddr = errors.New("no dial address configured: dial the advertised one")
