package main

import (
	"fmt"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/machines"
	"github.com/spf13/cobra"
)

// clusterCommand groups the calls of ClusterService.
func (a *app) clusterCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "cluster",
		Short: "Show and change the cluster of servers (status, members, add, remove, transfer)",
		Long: `A dfsmr cluster is a few dfsmrd servers that replicate one log with Raft: one
leads and takes every write, the others follow and apply what it commits. Any
server answers these commands; add, remove and transfer change the
cluster's configuration, which a follower forwards to the leader.

With authentication on, they need the admin role.`,
	}
	c.AddCommand(a.clusterStatusCommand(), a.clusterMembersCommand(), a.clusterAddCommand(),
		a.clusterRemoveCommand(), a.clusterTransferCommand())
	return c
}

func (a *app) clusterStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the server's Raft state, term, indexes and leader",
		Long: `Status shows the server --addr names: its id and addresses, its Raft state
(leader, follower, candidate), its term, the last log index it knows committed
and the last it applied, how long ago it heard from the leader, and who leads.`,
		Args: args(cobra.NoArgs),
		RunE: runE(func(*cobra.Command, []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Cluster.Status(a.ctx, &pb.StatusRequest{})
			if err != nil {
				return err
			}
			s := resp.GetServer()
			if a.json() {
				return a.printJSON(s)
			}
			leader := "none known (an election is under way)"
			if s.GetLeaderId() != "" {
				leader = s.GetLeaderId() + " at " + orDash(s.GetLeaderGrpcAddress())
			}
			t := newTable(a.stdout)
			t.row("id", s.GetId())
			t.row("state", stateName(s.GetState()))
			t.row("term", s.GetTerm())
			t.row("commit index", s.GetCommitIndex())
			t.row("applied index", s.GetAppliedIndex())
			t.row("last contact", lastContact(s))
			t.row("leader", leader)
			t.row("address", orDash(s.GetGrpcAddress()))
			t.row("raft address", orDash(s.GetRaftAddress()))
			return t.Flush()
		}),
	}
}

func (a *app) clusterMembersCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the cluster's members: role, addresses, applied index, last contact",
		Long: `Members lists every member of the cluster, in id order. The server --addr
names asks each other member for its status (1 second each, all at once): a
member that does not answer shows "unreachable" and why.

ROLE is the member's Raft state (leader, follower, candidate), or nonvoter for
a member that receives the log without voting; for an unreachable member, what
the configuration says (voter or nonvoter). ADDRESS is its gRPC address,
RAFT its Raft address. APPLIED is the last log index it applied: a follower
behind the leader's is catching up. LAST CONTACT is how long ago it heard from
the leader.`,
		Args: args(cobra.NoArgs),
		RunE: runE(func(*cobra.Command, []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Cluster.Members(a.ctx, &pb.MembersRequest{})
			if err != nil {
				return err
			}
			if a.json() {
				for _, m := range resp.GetMembers() {
					if err := a.printJSON(m); err != nil {
						return err
					}
				}
				return nil
			}
			t := newTable(a.stdout, "ID", "ROLE", "ADDRESS", "RAFT", "APPLIED", "LAST CONTACT", "NOTE")
			for _, m := range resp.GetMembers() {
				applied, contact, note := "-", "-", ""
				if m.GetReachable() {
					applied, contact = fmt.Sprint(m.GetStatus().GetAppliedIndex()), lastContact(m.GetStatus())
				} else {
					note = "unreachable: " + m.GetError()
				}
				t.row(m.GetId(), memberRole(m), orDash(m.GetGrpcAddress()), m.GetRaftAddress(), applied, contact, note)
			}
			return t.Flush()
		}),
	}
}

func (a *app) clusterAddCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "add ID RAFT_ADDR GRPC_ADDR",
		Short: "Add a server to the cluster as a voter",
		Long: `Add makes the server ID, whose Raft transport listens at RAFT_ADDR and whose
gRPC API at GRPC_ADDR, a voting member of the cluster; it then receives the
log from the leader. The server must be running and must not lead a cluster
of its own. A server started with dfsmrd --join makes this call for itself:
use add to bring back a member removed earlier (it keeps its Raft state and
does not bootstrap again), or to promote a nonvoter. Adding a member again at
the same RAFT_ADDR changes nothing but its recorded GRPC_ADDR.`,
		Example: "  dfsmr cluster add n4 10.0.0.4:5004 10.0.0.4:5003",
		Args:    args(cobra.ExactArgs(3)),
		RunE: runE(func(_ *cobra.Command, argv []string) error {
			req := &pb.AddVoterRequest{Id: argv[0], RaftAddress: argv[1], GrpcAddress: argv[2]}
			return a.clusterChange(func(c *client.Client) error {
				_, err := c.Cluster.AddVoter(a.ctx, req)
				return err
			}, map[string]any{"id": req.Id, "raftAddress": req.RaftAddress, "grpcAddress": req.GrpcAddress},
				fmt.Sprintf("added %s (raft %s, gRPC %s) as a voter", req.Id, req.RaftAddress, req.GrpcAddress))
		}),
	}
}

func (a *app) clusterRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a member from the cluster",
		Long: `Remove takes the member ID out of the cluster's configuration. Removing the
leader makes it step down; the others elect a new one. The removed server
keeps running, alone, until it is stopped. Keep an odd number of voters:
three tolerate one failure, five tolerate two.`,
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeFirst(a.memberIDs),
		RunE: runE(func(_ *cobra.Command, argv []string) error {
			id := argv[0]
			return a.clusterChange(func(c *client.Client) error {
				_, err := c.Cluster.RemoveServer(a.ctx, &pb.RemoveServerRequest{Id: id})
				return err
			}, map[string]any{"id": id}, "removed "+id)
		}),
	}
}

func (a *app) clusterTransferCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "transfer [ID]",
		Short: "Hand leadership to another voter",
		Long: `Transfer asks the leader to hand leadership to the voter ID, or without ID to
the most up-to-date voter, and returns once it stepped down. Run it before
stopping the leader for maintenance, so that the cluster does not wait for an
election timeout.`,
		Args:              args(cobra.MaximumNArgs(1)),
		ValidArgsFunction: a.completeFirst(a.memberIDs),
		RunE: runE(func(_ *cobra.Command, argv []string) error {
			var id string
			if len(argv) == 1 {
				id = argv[0]
			}
			done := "leadership handed over"
			if id != "" {
				done += " to " + id
			}
			return a.clusterChange(func(c *client.Client) error {
				_, err := c.Cluster.TransferLeadership(a.ctx, &pb.TransferLeadershipRequest{Id: id})
				return err
			}, map[string]any{"id": id}, done)
		}),
	}
}

// clusterChange makes a call that changes the configuration and prints
// what it did: the object js with -o json, else the sentence done.
func (a *app) clusterChange(call func(*client.Client) error, js map[string]any, done string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	if err := call(c); err != nil {
		return err
	}
	if a.json() {
		return a.printValue(js)
	}
	_, err = fmt.Fprintln(a.stdout, clean(done))
	return err
}

// stateName turns RAFT_STATE_LEADER into "leader", and the unset state
// into "-".
func stateName(s pb.RaftState) string {
	if s == pb.RaftState_RAFT_STATE_UNSPECIFIED {
		return "-"
	}
	return enumName(s.String(), "RAFT_STATE_")
}

// memberRole is a member's ROLE: its Raft state when it answered (a
// following nonvoter is "nonvoter"), else what the configuration says.
func memberRole(m *pb.Member) string {
	nonvoter := m.GetSuffrage() == pb.Suffrage_SUFFRAGE_NONVOTER
	switch {
	case m.GetReachable() && nonvoter && m.GetStatus().GetState() == pb.RaftState_RAFT_STATE_FOLLOWER:
		return "nonvoter"
	case m.GetReachable():
		return stateName(m.GetStatus().GetState())
	case m.GetLeader():
		return "leader"
	case nonvoter:
		return "nonvoter"
	}
	return "voter"
}

// lastContact says how long ago a server heard from the leader: "-" on
// the leader, "never" when it never did.
func lastContact(s *pb.ServerStatus) string {
	switch {
	case s.GetState() == pb.RaftState_RAFT_STATE_LEADER:
		return "-"
	case s.LastContact == nil:
		return "never"
	}
	return machines.FormatDuration(s.GetLastContact().AsDuration().Round(time.Millisecond)) + " ago"
}
