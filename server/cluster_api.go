package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server/cluster"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/tlsconf"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// clusterNode is what ClusterService needs of the server's Raft node
// (package cluster). The write calls (AddVoter, RemoveServer,
// TransferLeadership) succeed on the leader only; elsewhere they fail with
// an error that matches cluster.ErrNotLeader.
type clusterNode interface {
	// Status describes this server.
	Status() clusterStatus
	// Members lists the configuration: every member, its addresses and
	// suffrage, and which one leads.
	Members() ([]clusterMember, error)
	// AddVoter adds (or, for an id already a member, updates) a voter and
	// records its gRPC address; it returns once the configuration is
	// committed.
	AddVoter(ctx context.Context, id, raftAddr, grpcAddr string) error
	// RemoveServer removes a member and its recorded gRPC address.
	RemoveServer(ctx context.Context, id string) error
	// TransferLeadership hands leadership to the voter id, or to the most
	// up-to-date voter when id is empty.
	TransferLeadership(ctx context.Context, id string) error
}

// clusterStatus is what a Raft node says of its server (cluster.Status).
type clusterStatus struct {
	// ID, RaftAddr and GRPCAddr name the server: its raft id, the raft
	// address others reach it at, its gRPC address ("" when unknown).
	ID, RaftAddr, GRPCAddr string
	// State is the raft state as raft.RaftState.String() spells it:
	// "Leader", "Follower", "Candidate" or "Shutdown" (any case).
	State string
	// Term, CommitIndex and AppliedIndex are raft's.
	Term, CommitIndex, AppliedIndex uint64
	// LastContact is the time since the leader was last heard from: 0 on
	// the leader, negative when no leader was ever heard from.
	LastContact time.Duration
	// LeaderID and LeaderGRPC name the leader this server knows of, ""
	// when none is known (and LeaderGRPC when its address is not recorded).
	LeaderID, LeaderGRPC string
}

// clusterMember is one server of the configuration (cluster.Member).
type clusterMember struct {
	// ID, RaftAddr and GRPCAddr name the member; GRPCAddr is "" when it
	// is not recorded.
	ID, RaftAddr, GRPCAddr string
	// Suffrage is raft.ServerSuffrage.String(): "Voter" or "Nonvoter"
	// (any case).
	Suffrage string
	// Leader is true for the member that leads.
	Leader bool
}

// memberProbeTimeout bounds the Status call Members makes to each member.
const memberProbeTimeout = time.Second

// Errors of ClusterService that are no fault of the node.
var (
	// errNoCluster: the server has not opened its log yet.
	errNoCluster = errors.New("the server is starting: its cluster log is not open yet")
	// errNotMember: the id names no member.
	errNotMember = errors.New("not a member of the cluster")
	// errMemberExists: the id or raft address is another member's.
	errMemberExists = errors.New("already a member of the cluster")
	// errNoTransfer: leadership cannot go where it was asked to.
	errNoTransfer = errors.New("cannot transfer leadership")
)

// clusterAPI serves ClusterService.
type clusterAPI struct {
	pb.UnimplementedClusterServiceServer
	// node is the Raft node.
	node clusterNode
	// dial are the options of the connections to other members.
	dial []grpc.DialOption
}

// memberDialOptions are the options Members dials the other members
// with: plaintext when this server serves plaintext, else TLS verified
// against the system's root CAs.
func memberDialOptions(cfg Config) []grpc.DialOption {
	if cfg.TLSCert == "" {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tlsconf.MinVersion}))}
}

func (c *clusterAPI) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	if c.node == nil {
		return nil, errNoCluster
	}
	return &pb.StatusResponse{Server: statusToProto(c.node.Status())}, nil
}

// Members lists the configuration and asks every other member for its
// Status, all at once, each for at most memberProbeTimeout. The caller's
// bearer token goes with those calls: the members share the tokens file,
// and a member's Status needs the same role as this call.
func (c *clusterAPI) Members(ctx context.Context, _ *pb.MembersRequest) (*pb.MembersResponse, error) {
	if c.node == nil {
		return nil, errNoCluster
	}
	members, err := c.node.Members()
	if err != nil {
		return nil, fmt.Errorf("cluster members: %w", err)
	}
	self := c.node.Status()
	slices.SortFunc(members, func(a, b clusterMember) int { return cmp.Compare(a.ID, b.ID) })
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, v := range md.Get("authorization") {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", v)
		}
	}
	out := make([]*pb.Member, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		pm := &pb.Member{Id: m.ID, RaftAddress: m.RaftAddr, GrpcAddress: m.GRPCAddr, Suffrage: suffrageToProto(m.Suffrage), Leader: m.Leader}
		out[i] = pm
		switch {
		case m.ID == self.ID:
			pm.Reachable, pm.Status = true, statusToProto(self)
		case m.GRPCAddr == "":
			pm.Error = "its gRPC address is not recorded"
		default:
			wg.Go(func() {
				st, err := c.probe(ctx, m)
				if err != nil {
					pm.Error = err.Error()
					return
				}
				pm.Reachable, pm.Status = true, st
			})
		}
	}
	wg.Wait()
	return &pb.MembersResponse{Members: out}, nil
}

// probe asks member m for its Status.
func (c *clusterAPI) probe(ctx context.Context, m clusterMember) (*pb.ServerStatus, error) {
	conn, err := grpc.NewClient(m.GRPCAddr, c.dial...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, memberProbeTimeout)
	defer cancel()
	resp, err := pb.NewClusterServiceClient(conn).Status(ctx, &pb.StatusRequest{})
	if err != nil {
		st := status.Convert(err)
		return nil, fmt.Errorf("%s: %s", code.Code(st.Code()), st.Message())
	}
	if got := resp.GetServer().GetId(); got != m.ID {
		return nil, fmt.Errorf("the server at %s is %q, not %q", m.GRPCAddr, got, m.ID)
	}
	return resp.GetServer(), nil
}

func (c *clusterAPI) AddVoter(ctx context.Context, req *pb.AddVoterRequest) (*pb.AddVoterResponse, error) {
	for _, err := range []error{
		checkNodeID("id", req.GetId(), true),
		checkHostPort("raft_address", req.GetRaftAddress()),
		checkHostPort("grpc_address", req.GetGrpcAddress()),
	} {
		if err != nil {
			return nil, err
		}
	}
	if c.node == nil {
		return nil, errNoCluster
	}
	members, err := c.node.Members()
	if err != nil {
		return nil, fmt.Errorf("cluster members: %w", err)
	}
	for _, m := range members {
		switch {
		case m.ID == req.GetId() && m.RaftAddr != req.GetRaftAddress():
			return nil, fmt.Errorf("id %q: %w at raft address %s", m.ID, errMemberExists, m.RaftAddr)
		case m.ID != req.GetId() && m.RaftAddr == req.GetRaftAddress():
			return nil, fmt.Errorf("raft address %s: %w as %q", m.RaftAddr, errMemberExists, m.ID)
		}
	}
	if err := c.node.AddVoter(ctx, req.GetId(), req.GetRaftAddress(), req.GetGrpcAddress()); err != nil {
		return nil, fmt.Errorf("add voter %q: %w", req.GetId(), err)
	}
	return &pb.AddVoterResponse{}, nil
}

func (c *clusterAPI) RemoveServer(ctx context.Context, req *pb.RemoveServerRequest) (*pb.RemoveServerResponse, error) {
	if err := checkNodeID("id", req.GetId(), true); err != nil {
		return nil, err
	}
	if c.node == nil {
		return nil, errNoCluster
	}
	if _, err := c.member(req.GetId()); err != nil {
		return nil, err
	}
	if err := c.node.RemoveServer(ctx, req.GetId()); err != nil {
		return nil, fmt.Errorf("remove server %q: %w", req.GetId(), err)
	}
	return &pb.RemoveServerResponse{}, nil
}

func (c *clusterAPI) TransferLeadership(ctx context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	id := req.GetId()
	if err := checkNodeID("id", id, false); err != nil {
		return nil, err
	}
	if c.node == nil {
		return nil, errNoCluster
	}
	self := c.node.Status()
	leading := stateToProto(self.State) == pb.RaftState_RAFT_STATE_LEADER
	if id != "" {
		m, err := c.member(id)
		if err != nil {
			return nil, err
		}
		switch {
		case suffrageToProto(m.Suffrage) != pb.Suffrage_SUFFRAGE_VOTER:
			return nil, fmt.Errorf("%w to %q: it does not vote", errNoTransfer, id)
		case leading && id == self.ID:
			return nil, fmt.Errorf("%w to %q: it already leads", errNoTransfer, id)
		}
	} else if leading {
		members, err := c.node.Members()
		if err != nil {
			return nil, fmt.Errorf("cluster members: %w", err)
		}
		if !slices.ContainsFunc(members, func(m clusterMember) bool {
			return m.ID != self.ID && suffrageToProto(m.Suffrage) == pb.Suffrage_SUFFRAGE_VOTER
		}) {
			return nil, fmt.Errorf("%w: no other voter", errNoTransfer)
		}
	}
	if err := c.node.TransferLeadership(ctx, id); err != nil {
		return nil, fmt.Errorf("transfer leadership: %w", err)
	}
	return &pb.TransferLeadershipResponse{}, nil
}

// member finds the member id, or fails with errNotMember.
func (c *clusterAPI) member(id string) (clusterMember, error) {
	members, err := c.node.Members()
	if err != nil {
		return clusterMember{}, fmt.Errorf("cluster members: %w", err)
	}
	i := slices.IndexFunc(members, func(m clusterMember) bool { return m.ID == id })
	if i < 0 {
		return clusterMember{}, fmt.Errorf("%q: %w", id, errNotMember)
	}
	return members[i], nil
}

func statusToProto(s clusterStatus) *pb.ServerStatus {
	out := &pb.ServerStatus{
		Id: s.ID, RaftAddress: s.RaftAddr, GrpcAddress: s.GRPCAddr,
		State: stateToProto(s.State), Term: s.Term, CommitIndex: s.CommitIndex, AppliedIndex: s.AppliedIndex,
		LeaderId: s.LeaderID, LeaderGrpcAddress: s.LeaderGRPC,
	}
	if s.LastContact >= 0 {
		out.LastContact = durationpb.New(s.LastContact)
	}
	return out
}

func stateToProto(s string) pb.RaftState {
	switch strings.ToLower(s) {
	case "leader":
		return pb.RaftState_RAFT_STATE_LEADER
	case "follower":
		return pb.RaftState_RAFT_STATE_FOLLOWER
	case "candidate":
		return pb.RaftState_RAFT_STATE_CANDIDATE
	case "shutdown":
		return pb.RaftState_RAFT_STATE_SHUTDOWN
	}
	return pb.RaftState_RAFT_STATE_UNSPECIFIED
}

func suffrageToProto(s string) pb.Suffrage {
	switch strings.ToLower(s) {
	case "voter":
		return pb.Suffrage_SUFFRAGE_VOTER
	case "nonvoter":
		return pb.Suffrage_SUFFRAGE_NONVOTER
	}
	return pb.Suffrage_SUFFRAGE_UNSPECIFIED
}

// checkNodeID checks a raft server id; an empty one is fine unless
// required.
func checkNodeID(field, id string, required bool) error {
	switch {
	case id == "" && !required:
		return nil
	case id == "":
		return &fsm.InvalidError{Field: field, Reason: "is required"}
	case !cluster.ValidID(id):
		return &fsm.InvalidError{Field: field, Reason: "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"}
	}
	return nil
}

// maxAddrBytes bounds an address: a DNS name is at most 253 bytes.
const maxAddrBytes = 255

// checkHostPort checks an address other servers dial: host:port, a port
// from 1 to 65535, and a host that names one machine (not 0.0.0.0).
func checkHostPort(field, addr string) error {
	bad := func(reason string) error { return &fsm.InvalidError{Field: field, Reason: reason} }
	if addr == "" {
		return bad("is required")
	}
	if len(addr) > maxAddrBytes {
		return bad(fmt.Sprintf("is %d bytes long; the limit is %d", len(addr), maxAddrBytes))
	}
	if p := nameProblem(addr); p != "" {
		return bad(p)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return bad("must be host:port")
	}
	if host == "" {
		return bad("must name a host (host:port)")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return bad("must end in a port from 1 to 65535")
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return bad("must be an address other servers can reach, not the unspecified " + host)
	}
	return nil
}
