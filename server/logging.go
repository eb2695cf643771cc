package server

import (
	"context"
	"crypto/rand"
	"log/slog"
	"runtime/debug"
	"sync"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Log attribute keys of the RPC logs (the logging interceptor adds its own
// grpc.* keys: service, method, code, time_ms).
const (
	logKeyRequestID       = "request_id"
	logKeyClientRequestID = "client_request_id"
	logKeyMethod          = "method"
	logKeyPanic           = "panic"
	logKeyStack           = "stack"
)

// RequestIDHeader is the metadata key of a request id. The server sends its
// own id for every call in this response header; a caller may send one in
// the request, which is logged as client_request_id next to the server's.
const RequestIDHeader = "x-request-id"

// maxClientRequestID bounds the caller's request id kept in the logs.
const maxClientRequestID = 64

// requestIDs tags every call with a fresh request id in its logging fields.
// It is a stats handler rather than an interceptor because a stats handler
// sees the call before every interceptor, so that even the recovery
// interceptor, outermost in the chain, logs a panic with its request id.
// The caller's own x-request-id is only a correlation label: it is logged
// beside the server's id, never instead of it, and never used for anything
// else.
type requestIDs struct{}

func (requestIDs) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	fields := logging.Fields{logKeyRequestID, rand.Text()}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(RequestIDHeader); len(v) > 0 && printable(v[0], maxClientRequestID) {
			fields = append(fields, logKeyClientRequestID, v[0])
		}
	}
	return logging.InjectFields(ctx, fields)
}

func (requestIDs) HandleRPC(context.Context, stats.RPCStats)                         {}
func (requestIDs) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (requestIDs) HandleConn(context.Context, stats.ConnStats)                       {}

// printable says s is 1 to max bytes of printable ASCII: anything else
// from a caller does not reach the logs.
func printable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// requestID returns the id requestIDs gave the call of ctx.
func requestID(ctx context.Context) string {
	it := logging.ExtractFields(ctx).Iterator()
	for it.Next() {
		if k, v := it.At(); k == logKeyRequestID {
			s, _ := v.(string)
			return s
		}
	}
	return ""
}

// panicked logs a handler's panic with its stack and turns it into
// INTERNAL; the caller learns only the request id to quote.
func panicked(log *slog.Logger, count func()) func(ctx context.Context, p any) error {
	return func(ctx context.Context, p any) error {
		id := requestID(ctx)
		method, _ := grpc.Method(ctx)
		args := append([]any(logging.ExtractFields(ctx)), // request ids
			logKeyMethod, method, logKeyPanic, p, logKeyStack, string(debug.Stack()))
		log.ErrorContext(ctx, "panic in handler", args...)
		if count != nil {
			count()
		}
		return status.Errorf(codes.Internal, "internal error (request id %s)", id)
	}
}

// sendRequestID puts the call's request id in the response headers, so a
// caller can quote it when reporting a problem.
func sendRequestID() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDHeader, requestID(ctx)))
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		md := metadata.Pairs(RequestIDHeader, requestID(ss.Context()))
		// The trailer always carries the id; the header only once the
		// handler sends something, so that a stream refused before its
		// handler runs stays a trailers-only response.
		ss.SetTrailer(md)
		return handler(srv, &idStream{ServerStream: ss, md: md})
	}
	return unary, stream
}

// idStream adds the request id to the header when the handler first sends.
type idStream struct {
	grpc.ServerStream
	md   metadata.MD
	once sync.Once
}

func (s *idStream) setID() { s.once.Do(func() { _ = s.ServerStream.SetHeader(s.md) }) }

// SendHeader sends md and the request id.
func (s *idStream) SendHeader(md metadata.MD) error {
	s.setID()
	return s.ServerStream.SendHeader(md)
}

// SendMsg sends m, after the header with the request id.
func (s *idStream) SendMsg(m any) error {
	s.setID()
	return s.ServerStream.SendMsg(m)
}
