package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ForwardedByHeader is the metadata key a follower adds to every call it
// forwards, naming itself (Options.Name). A call that carries it is never
// forwarded again.
const ForwardedByHeader = "dfsmr-forwarded-by"

// Errors of calls that cannot reach the leader. Each arrives at the client
// as UNAVAILABLE (the error has a GRPCStatus method), which clients retry;
// errors.Is matches these sentinels.
var (
	// ErrNoLeader: no leader is known, an election is under way.
	ErrNoLeader = errors.New("no leader is known")
	// ErrNotLeader: a forwarded call reached a server that does not lead,
	// because leadership moved while the call was on its way.
	ErrNotLeader = errors.New("not the leader; retry")
	// ErrLeaderChanged: the connection to the leader was dropped during
	// the call, because leadership moved or this server is stopping.
	ErrLeaderChanged = errors.New("the connection to the leader was dropped (leadership moved, or this server is stopping); retry")
	// ErrClosed: the Forwarder is closed; the server is stopping.
	ErrClosed = errors.New("this server is stopping; retry")
)

// Log attribute keys.
const (
	logKeyLeader   = "leader"
	logKeyPrevious = "previous"
)

// Options configure a Forwarder.
type Options struct {
	// Leader returns the leader's gRPC address, or self=true when this
	// server leads, or an error when no leader is known (an election is
	// under way). It is called for every call that may be forwarded, so
	// it must be cheap (raft.LeaderWithID is). Required.
	Leader func() (addr string, self bool, err error)
	// Dial are the options of the connection to the leader: the cluster's
	// transport credentials at least (grpc.NewClient refuses none). The
	// connection sets no message size limit unless these do.
	Dial []grpc.DialOption
	// Local reports whether a call of a full method name is served by
	// the server called. Nil means the methods of ReadMethods.
	Local func(ctx context.Context, fullMethod string) bool
	// Codec decodes and encodes the messages of the calls this server
	// serves itself (the server codec it would have without forwarding).
	// Nil means gRPC's proto codec.
	Codec encoding.CodecV2
	// Name names this server in the ForwardedByHeader of the calls it
	// forwards (its cluster member id). Empty means the host name.
	Name string
	// Logger receives the leader changes; nil discards them.
	Logger *slog.Logger
}

// Forwarder passes the calls a follower does not serve itself to the
// leader. Its interceptors go innermost in the server's chains, so that a
// call is authenticated, limited, logged and counted on the server the
// client called before it is forwarded (and again on the leader).
type Forwarder struct {
	leader func() (string, bool, error)
	dial   []grpc.DialOption
	local  func(context.Context, string) bool
	name   string
	log    *slog.Logger
	server codec // frames, else Options.Codec
	client codec // frames, else proto

	mu     sync.Mutex
	conn   *leaderConn // nil until the first forwarded call, and after a drop
	closed bool
}

// leaderConn is the cached connection to one leader address.
type leaderConn struct {
	addr    string
	cc      *grpc.ClientConn
	dropped atomic.Bool
}

// New returns a Forwarder.
func New(o Options) *Forwarder {
	f := &Forwarder{
		leader: o.Leader,
		// The leader bounds its responses, and this server bounded the
		// requests it forwards: the connection adds no limit of its own
		// (gRPC's default would refuse responses over 4 MiB).
		dial: append([]grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32))}, o.Dial...),
		local:  o.Local,
		name:   o.Name,
		log:    o.Logger,
		server: codec{next: o.Codec},
		client: codec{next: encoding.GetCodecV2("proto")},
	}
	if f.local == nil {
		f.local = readSet()
	}
	if f.name == "" {
		f.name, _ = os.Hostname()
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.log = f.log.With("component", "forward")
	if f.server.next == nil {
		f.server.next = f.client.next
	}
	return f
}

// ServerOptions returns the server codec forwarding needs: it passes
// frames through and gives every other message to Options.Codec. It
// replaces any other ForceServerCodecV2 given before it.
func (f *Forwarder) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ForceServerCodecV2(f.server)}
}

// Unary returns the unary interceptor. A forwarded call's request, already
// decoded, is encoded again for the leader; the leader's response frame,
// header and trailer and its status come back as they are.
func (f *Forwarder) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if f.local(ctx, info.FullMethod) {
			return handler(ctx, req)
		}
		lc, err := f.route(ctx)
		if err != nil {
			return nil, err
		}
		if lc == nil {
			return handler(ctx, req)
		}
		var header, trailer metadata.MD
		resp := new(Frame)
		err = lc.cc.Invoke(f.outgoing(ctx), info.FullMethod, req, resp,
			grpc.ForceCodecV2(f.client), grpc.Header(&header), grpc.Trailer(&trailer))
		_ = grpc.SetHeader(ctx, endToEnd(header))
		_ = grpc.SetTrailer(ctx, endToEnd(trailer))
		if err != nil {
			return nil, lc.failed(ctx, err)
		}
		return resp, nil
	}
}

// Stream returns the stream interceptor. A forwarded stream does not reach
// the handler: frames flow client -> leader and leader -> client until
// each side half-closes, the leader's header is sent on as soon as it
// arrives, and its trailer and status end the call. The client's cancel
// or deadline ends the leader's stream too.
func (f *Forwarder) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if f.local(ss.Context(), info.FullMethod) {
			return handler(srv, ss)
		}
		lc, err := f.route(ss.Context())
		if err != nil {
			return err
		}
		if lc == nil {
			return handler(srv, ss)
		}
		return f.pipe(ss, lc, info)
	}
}

// Close drops the connection to the leader; the calls forwarded on it end
// with UNAVAILABLE, and later calls that would be forwarded fail with
// ErrClosed. Call it once the gRPC server has stopped.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	old := f.conn
	f.conn = nil
	f.mu.Unlock()
	if old == nil {
		return nil
	}
	return old.drop()
}

// LeaderChanged drops the cached connection when it no longer goes to the
// leader, ending the calls forwarded on it with UNAVAILABLE. Call it when
// leadership moves; without it, the connection is replaced at the next
// forwarded call, and streams forwarded to a former leader last until then.
func (f *Forwarder) LeaderChanged() {
	addr, self, err := f.leader()
	f.mu.Lock()
	old := f.conn
	if old == nil || (err == nil && !self && addr == old.addr) {
		f.mu.Unlock()
		return
	}
	f.conn = nil
	f.mu.Unlock()
	f.log.Info("dropped the connection to the former leader", logKeyLeader, old.addr)
	_ = old.drop()
}

// route returns the connection to forward a call on, nil when this server
// leads and serves the call itself, or why the call cannot go anywhere.
func (f *Forwarder) route(ctx context.Context) (*leaderConn, error) {
	addr, self, err := f.leader()
	switch {
	case err != nil:
		return nil, unavailable(fmt.Errorf("%w (%v); retry", ErrNoLeader, err))
	case self:
		return nil, nil
	case addr == "":
		return nil, unavailable(fmt.Errorf("%w; retry", ErrNoLeader))
	}
	if by := forwardedBy(ctx); by != "" {
		return nil, unavailable(fmt.Errorf("%w (forwarded here by %s; the leader is at %s)", ErrNotLeader, by, addr))
	}
	return f.connect(addr)
}

// connect returns the connection to addr, replacing the cached one when
// the leader changed.
func (f *Forwarder) connect(addr string) (*leaderConn, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, unavailable(ErrClosed)
	}
	if lc := f.conn; lc != nil && lc.addr == addr {
		f.mu.Unlock()
		return lc, nil
	}
	// grpc.NewClient only checks its arguments: a refusal is a
	// configuration error, not an unreachable leader.
	cc, err := grpc.NewClient(addr, f.dial...)
	if err != nil {
		f.mu.Unlock()
		return nil, fmt.Errorf("connect to the leader at %s: %w", addr, err)
	}
	old := f.conn
	f.conn = &leaderConn{addr: addr, cc: cc}
	lc := f.conn
	f.mu.Unlock()
	previous := ""
	if old != nil {
		previous = old.addr
		_ = old.drop()
	}
	f.log.Info("forwarding writes to a new leader", logKeyLeader, addr, logKeyPrevious, previous)
	return lc, nil
}

// drop closes the connection; the calls on it end with CANCELED, which
// failed turns into UNAVAILABLE.
func (lc *leaderConn) drop() error {
	lc.dropped.Store(true)
	return lc.cc.Close()
}

// failed returns the error of a call forwarded on lc, as the client
// should see it: the leader's status unchanged, except that a call cut by
// a drop of the connection, not by its own client, is UNAVAILABLE.
func (lc *leaderConn) failed(ctx context.Context, err error) error {
	if status.Code(err) == codes.Canceled && ctx.Err() == nil && lc.dropped.Load() {
		return unavailable(fmt.Errorf("%w (the leader was at %s)", ErrLeaderChanged, lc.addr))
	}
	return err
}

// pipe forwards the stream ss to the leader on lc.
func (f *Forwarder) pipe(ss grpc.ServerStream, lc *leaderConn, info *grpc.StreamServerInfo) error {
	ctx, cancel := context.WithCancel(f.outgoing(ss.Context()))
	defer cancel()
	desc := &grpc.StreamDesc{ServerStreams: info.IsServerStream, ClientStreams: info.IsClientStream}
	cs, err := lc.cc.NewStream(ctx, desc, info.FullMethod, grpc.ForceCodecV2(f.client))
	if err != nil {
		return lc.failed(ss.Context(), err)
	}
	up := make(chan error, 1)
	go func() {
		err := sendUp(ss, cs)
		// The error is there before the cancel it causes ends sendDown.
		up <- err
		if err != nil {
			cancel()
		}
	}()
	err = sendDown(cs, ss)
	// When the client's side failed, that is why the call ended. When
	// the leader's side ended first, sendUp may still wait for a client
	// message: it returns once this handler has.
	select {
	case upErr := <-up:
		if upErr != nil {
			return upErr
		}
	default:
	}
	if err != nil {
		return lc.failed(ss.Context(), err)
	}
	return nil
}

// sendUp moves the client's frames to the leader until the client
// half-closes (nil), the leader ends the call (nil: its status comes
// down), or the client's side fails.
func sendUp(ss grpc.ServerStream, cs grpc.ClientStream) error {
	for {
		f := new(Frame)
		if err := ss.RecvMsg(f); err != nil {
			if err == io.EOF {
				return cs.CloseSend()
			}
			return err
		}
		if err := cs.SendMsg(f); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// sendDown moves the leader's header, frames and trailer to the client
// and returns the leader's status: nil when it ended the call with OK.
func sendDown(cs grpc.ClientStream, ss grpc.ServerStream) error {
	// A nil header means the leader answered with its status alone; the
	// client then gets the status alone too.
	if header, err := cs.Header(); err == nil && header != nil {
		if err := ss.SendHeader(endToEnd(header)); err != nil {
			return err
		}
	}
	for {
		f := new(Frame)
		if err := cs.RecvMsg(f); err != nil {
			ss.SetTrailer(endToEnd(cs.Trailer()))
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(f); err != nil {
			return err
		}
	}
}

// outgoing returns ctx with the caller's metadata, minus the transport's
// own keys, plus ForwardedByHeader, as the metadata of the call to the
// leader. Its deadline and cancellation are the caller's.
func (f *Forwarder) outgoing(ctx context.Context) context.Context {
	in, _ := metadata.FromIncomingContext(ctx)
	out := endToEnd(in)
	out.Set(ForwardedByHeader, f.name)
	return metadata.NewOutgoingContext(ctx, out)
}

// forwardedBy returns the ForwardedByHeader of the call of ctx, "" when
// it came from a client.
func forwardedBy(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(ForwardedByHeader); len(v) > 0 {
		if v[0] == "" {
			return "an unnamed server"
		}
		return v[0]
	}
	return ""
}

// endToEnd returns a copy of md without gRPC's own grpc-* keys, which
// describe one hop (grpc-accept-encoding, grpc-previous-rpc-attempts,
// grpc-retry-pushback-ms). The other keys that describe a connection
// (pseudo-headers, content-type, user-agent, te) never reach metadata the
// transport sends: it writes its own.
func endToEnd(md metadata.MD) metadata.MD {
	out := make(metadata.MD, len(md))
	for k, v := range md {
		if strings.HasPrefix(k, "grpc-") {
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}

// unavailableError is an error the client receives as UNAVAILABLE.
type unavailableError struct{ err error }

func unavailable(err error) error { return unavailableError{err} }

func (e unavailableError) Error() string { return e.err.Error() }

func (e unavailableError) Unwrap() error { return e.err }

// GRPCStatus makes the error UNAVAILABLE for gRPC, and for the server's
// error mapping, which keeps errors that have a status.
func (e unavailableError) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.err.Error())
}
