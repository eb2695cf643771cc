package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"time"
)

// Defaults of Config. The timeouts elect a new leader within about 2 s on
// a loopback or LAN network: a follower that hears nothing for
// HeartbeatTimeout (randomised up to twice that) starts an election.
const (
	DefaultHeartbeatTimeout   = 500 * time.Millisecond
	DefaultElectionTimeout    = 500 * time.Millisecond
	DefaultLeaderLeaseTimeout = 250 * time.Millisecond
	// DefaultSnapshotInterval is how often raft checks whether to snapshot.
	DefaultSnapshotInterval = 30 * time.Second
	// DefaultSnapshotThreshold is how many entries past the last snapshot
	// make the next check take one.
	DefaultSnapshotThreshold = 2048
	// DefaultTrailingLogs is how many entries a snapshot leaves in the
	// log, so that a follower that is a little behind catches up from the
	// log rather than from a whole snapshot.
	DefaultTrailingLogs = 2048
	// minTimeout is raft's least timeout and snapshot interval.
	minTimeout = 5 * time.Millisecond
	// snapshotsRetained is how many snapshots <Dir> keeps.
	snapshotsRetained = 2
)

// Config configures a Node. The zero value of every field but RaftAddr,
// GRPCAddr and Dir means its default.
type Config struct {
	// ID is this node's raft server id, unique in the cluster for all
	// time: 1 to 64 of [A-Za-z0-9._-]. Default: the host name.
	ID string
	// RaftAddr is the host:port the raft transport listens on, e.g.
	// 127.0.0.1:5004. Required. Port 0 picks a free port (Node.Addr tells
	// which) and advertises it when Advertise is empty: enough for a
	// one-node cluster, whose leader updates its own address in the
	// cluster's configuration whenever it changed.
	RaftAddr string
	// Advertise is the host:port the other nodes reach this one at.
	// Default: RaftAddr, which must then name a host (not 0.0.0.0 or ::).
	Advertise string
	// GRPCAddr is this node's gRPC address as clients and the other
	// nodes reach it; the leader records it in the replicated state
	// (store.MemberCommand) so that followers can name or forward to it.
	// Required.
	GRPCAddr string
	// Dir is the data directory of the log (Dir/wal), the stable store
	// (Dir/stable.db) and the snapshots (Dir/snapshots); created if
	// missing. Required.
	Dir string
	// Bootstrap makes a node that has no raft state yet start a cluster:
	// of itself alone, or of Peers. A node with raft state ignores it, so
	// it may stay set across restarts. Default false: the node waits to be
	// added by a leader (Node.AddVoter).
	Bootstrap bool
	// Peers is the initial voter set of a multi-node bootstrap, the same
	// list on every node, including this one (with its Advertise address).
	// Only with Bootstrap. Default: none (bootstrap alone).
	Peers []Peer
	// Dial maps member ids to the addresses this node dials them at,
	// instead of the addresses they advertise: for a NAT or a proxy
	// between the servers. Default: none.
	Dial map[string]string
	// HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout are raft's
	// timeouts. Defaults: DefaultHeartbeatTimeout, DefaultElectionTimeout,
	// DefaultLeaderLeaseTimeout.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// SnapshotInterval, SnapshotThreshold and TrailingLogs control log
	// compaction: every SnapshotInterval (randomised up to twice that)
	// raft snapshots if SnapshotThreshold entries were appended since the
	// last snapshot, then drops the log before the snapshot but
	// TrailingLogs entries. Defaults: DefaultSnapshotInterval,
	// DefaultSnapshotThreshold, DefaultTrailingLogs.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// Solo says the node is meant to run alone (a server with no raft
	// address of its own): while it is the only voter, it elects itself
	// after a short timeout instead of HeartbeatTimeout, so that it takes
	// writes at once (see aloneTimeout). Default false.
	Solo bool
	// SegmentSize is the size of the log's segment files in bytes. The
	// log drops only whole segments once a snapshot holds them, so the
	// log takes at least one segment on disk. Default: raft-wal's, 64 MiB.
	SegmentSize int
	// Logger receives the node's and raft's lines, with component=raft.
	// Default: slog.Default().
	Logger *slog.Logger
}

// Peer is one voter of a bootstrap configuration.
type Peer struct {
	// ID is the raft server id, Addr its raft address (host:port).
	ID, Addr string
}

// ParsePeers parses a comma-separated list of id=host:port, the form of
// the peers setting.
func ParsePeers(s string) ([]Peer, error) {
	var peers []Peer
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, addr, ok := strings.Cut(item, "=")
		if !ok {
			return nil, &InvalidError{Field: "peers", Reason: fmt.Sprintf("%q is not id=host:port", item)}
		}
		peers = append(peers, Peer{ID: id, Addr: addr})
	}
	return peers, nil
}

// WithDefaults returns c with every unset field set to its default.
func (c Config) WithDefaults() Config {
	if c.ID == "" {
		c.ID, _ = os.Hostname()
	}
	if c.Advertise == "" && !unspecifiedHost(c.RaftAddr) && !zeroPort(c.RaftAddr) {
		c.Advertise = c.RaftAddr
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = DefaultElectionTimeout
	}
	if c.LeaderLeaseTimeout == 0 {
		c.LeaderLeaseTimeout = DefaultLeaderLeaseTimeout
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = DefaultSnapshotInterval
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = DefaultTrailingLogs
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first wrong field as an *InvalidError.
func (c Config) Validate() error {
	if err := checkID("id", c.ID); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.RaftAddr); err != nil {
		return &InvalidError{Field: "raft_addr", Reason: err.Error()}
	}
	if c.Advertise == "" {
		if unspecifiedHost(c.RaftAddr) {
			return &InvalidError{Field: "advertise", Reason: "required when raft_addr " + c.RaftAddr + " binds every interface"}
		}
	} else if err := checkAddr("advertise", c.Advertise); err != nil {
		return err
	}
	if c.GRPCAddr == "" {
		return &InvalidError{Field: "grpc_addr", Reason: "required"}
	}
	if c.Dir == "" {
		return &InvalidError{Field: "dir", Reason: "required"}
	}
	if len(c.Peers) > 0 {
		if !c.Bootstrap {
			return &InvalidError{Field: "peers", Reason: "only for a bootstrap"}
		}
		ids, addrs, self := map[string]bool{}, map[string]bool{}, false
		for _, p := range c.Peers {
			if err := checkID("peers", p.ID); err != nil {
				return err
			}
			if err := checkAddr("peers", p.Addr); err != nil {
				return err
			}
			if ids[p.ID] || addrs[p.Addr] {
				return &InvalidError{Field: "peers", Reason: "the id or address of " + p.ID + "=" + p.Addr + " appears twice"}
			}
			ids[p.ID], addrs[p.Addr] = true, true
			self = self || p.ID == c.ID
		}
		if !self {
			return &InvalidError{Field: "peers", Reason: "does not include this node, " + c.ID}
		}
	}
	for _, d := range []struct {
		field string
		d     time.Duration
	}{
		{"heartbeat_timeout", c.HeartbeatTimeout},
		{"election_timeout", c.ElectionTimeout},
		{"leader_lease_timeout", c.LeaderLeaseTimeout},
		{"snapshot_interval", c.SnapshotInterval},
	} {
		if d.d < minTimeout {
			return &InvalidError{Field: d.field, Reason: fmt.Sprintf("%v is below %v", d.d, minTimeout)}
		}
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return &InvalidError{Field: "leader_lease_timeout", Reason: "above heartbeat_timeout"}
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		return &InvalidError{Field: "election_timeout", Reason: "below heartbeat_timeout"}
	}
	return nil
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ValidID reports whether id is a valid raft server id: 1 to 64 of
// [A-Za-z0-9._-].
func ValidID(id string) bool { return idPattern.MatchString(id) }

func checkID(field, id string) error {
	if !ValidID(id) {
		return &InvalidError{Field: field, Reason: fmt.Sprintf("server id %q is not 1 to 64 of [A-Za-z0-9._-]", id)}
	}
	return nil
}

// maxAddrLen bounds an address: a DNS name and a port.
const maxAddrLen = 260

// checkAddr accepts a host:port that another node can dial.
func checkAddr(field, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	switch {
	case len(addr) > maxAddrLen:
		return &InvalidError{Field: field, Reason: fmt.Sprintf("longer than %d bytes", maxAddrLen)}
	case err != nil:
		return &InvalidError{Field: field, Reason: err.Error()}
	case unspecifiedHost(addr):
		return &InvalidError{Field: field, Reason: fmt.Sprintf("%q names no host another node can reach", addr)}
	case port == "0" || port == "":
		return &InvalidError{Field: field, Reason: fmt.Sprintf("%q names no port", addr)}
	case host == "":
		return &InvalidError{Field: field, Reason: fmt.Sprintf("%q names no host", addr)}
	}
	return nil
}

func unspecifiedHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}

func zeroPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0"
}
