package client

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// The header with which a read asks a cluster for the leader's latest
// state (see the server's README, Cluster → Reads).
const (
	ConsistencyHeader = "dfsmr-read-consistency"
	LinearizableRead  = "linearizable"
)

// WithLinearizableReads are dial options that make every call of the connection ask for a
// linearizable read: a follower forwards reads to the leader, which
// answers once it confirmed it leads and applied everything committed
// before the call, so a read sees every write acknowledged before it
// began. Without it, the server called answers from its own copy, which a
// follower applies a little behind the leader. Writes are unaffected.
func WithLinearizableReads() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(linearizable(ctx), method, req, reply, cc, opts...)
	}), grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(linearizable(ctx), desc, cc, method, opts...)
	})}
}

func linearizable(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, ConsistencyHeader, LinearizableRead)
}
