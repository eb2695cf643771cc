package server

import "google.golang.org/grpc"

// ServiceInfo lists the services and RPCs the gRPC server registered, so
// that tests can walk the whole API surface.
func (s *Server) ServiceInfo() map[string]grpc.ServiceInfo { return s.grpc.GetServiceInfo() }

// ChangesLagged is the number of Changes streams ended for lagging.
func (s *Server) ChangesLagged() uint64 { return s.hub.Lagged() }
