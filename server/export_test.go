package server

import (
	"google.golang.org/grpc"

	"github.com/dfsmr/dfsmr/server/store/bolt"
)

// ServiceInfo lists the services and RPCs the gRPC server registered, so
// that tests can walk the whole API surface.
func (s *Server) ServiceInfo() map[string]grpc.ServiceInfo { return s.grpc.GetServiceInfo() }

// Store returns the server's store, for tests that inject faults into it.
func (s *Server) Store() *bolt.Store { return s.store }

// ChangesLagged is the number of Changes streams ended for lagging.
func (s *Server) ChangesLagged() uint64 { return s.hub.Lagged() }

// The cluster node's seam, for tests that stand in for the Raft node.
type (
	ClusterNode   = clusterNode
	ClusterStatus = clusterStatus
	ClusterMember = clusterMember
)

// WithClusterNode returns c with the Raft node ClusterService serves.
func WithClusterNode(c Config, n ClusterNode) Config {
	c.clusterNode = n
	return c
}

// MemberProbeTimeout is how long Members waits for each member's Status.
const MemberProbeTimeout = memberProbeTimeout
