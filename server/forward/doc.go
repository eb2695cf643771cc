// Package forward lets any server of a dfsmr cluster take any call: a
// follower serves reads itself and passes every call that writes, or may
// write, to the leader, unary and streaming alike, so that clients need
// not know who leads.
//
// The forwarding is a transparent proxy. The follower's server codec lets
// a [Frame] through as the bytes on the wire; a forwarded stream moves
// frames both ways without decoding them, and a forwarded unary call
// returns the leader's response frame as it came. Only a unary request is
// encoded again, because gRPC decodes it before any interceptor runs. The
// leader's header and trailer metadata and its final status (code,
// message and details) reach the client unchanged.
//
// A follower forwards the caller's metadata (its token, its request id)
// minus the transport's own keys, and adds [ForwardedByHeader]. A call
// that carries that header is never forwarded again: when it reaches a
// server that no longer leads, it fails with UNAVAILABLE, which clients
// retry. So does a call made while no leader is known, or while the
// leader cannot be reached, or whose connection to the leader was dropped
// because leadership moved.
//
// The header is only a loop guard: a client that sets it merely stops its
// call from being forwarded, so it grants nothing and needs no trust. The
// leader checks the forwarded token itself. Both servers put their own
// request id in the x-request-id response header: a forwarded call's
// response carries the follower's id first, then the leader's.
package forward
