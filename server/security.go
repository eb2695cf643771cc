package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/dfsmr/dfsmr/server/auth"
	"github.com/dfsmr/dfsmr/server/tlsconf"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// Defaults of Config's limits.
const (
	// DefaultMaxConcurrentStreams bounds the streams (calls in flight) of
	// one connection, so that one client cannot open streams without end
	// (HTTP/2 rapid reset).
	DefaultMaxConcurrentStreams = 256
	// DefaultMaxRecvMsgBytes bounds a request message.
	DefaultMaxRecvMsgBytes = 4 << 20
	// DefaultRateLimit is the calls per second each client may make. It
	// is a guard against a runaway client, not a quota: without
	// authentication every worker on one host is one client (its IP), and
	// a pool of workers on one host makes ten thousand calls a second.
	DefaultRateLimit = 20000
	// DefaultRateBurst is how many calls a client may make at once above
	// its rate.
	DefaultRateBurst = 40000
	// DefaultMaxStreamsPerClient bounds the open streams (Changes, device
	// Connect) of one client over all its connections.
	DefaultMaxStreamsPerClient = 64
)

// Fixed transport limits.
const (
	// maxHeaderListBytes bounds a request's headers: a token and a few
	// gRPC headers need far less.
	maxHeaderListBytes = 64 << 10
	// readBufferBytes is a connection's read buffer: a device report or
	// a work call fits many times; a big message takes more reads.
	readBufferBytes = 8 << 10
	// keepaliveMinTime is how often a client may ping; a client pinging
	// more often is disconnected (ENHANCE_YOUR_CALM).
	keepaliveMinTime = 10 * time.Second
	// keepaliveTime is how long a connection may be silent before the
	// server pings it, and keepaliveTimeout how long it waits for the
	// answer before it closes the connection: a vanished worker or device
	// is noticed within about a minute and a half.
	keepaliveTime    = time.Minute
	keepaliveTimeout = 20 * time.Second
)

// securityDefaults sets the zero security and limit fields of c.
func (c Config) securityDefaults() Config {
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if c.MaxRecvMsgBytes == 0 {
		c.MaxRecvMsgBytes = DefaultMaxRecvMsgBytes
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.RateBurst == 0 {
		c.RateBurst = DefaultRateBurst
	}
	if c.MaxStreamsPerClient == 0 {
		c.MaxStreamsPerClient = DefaultMaxStreamsPerClient
	}
	return c
}

// validateSecurity checks the security fields and refuses to expose the
// server beyond loopback without TLS and authentication.
func (c Config) validateSecurity() error {
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("tls: set both the certificate (--tls-cert) and the key (--tls-key)")
	case c.ClientCA != "" && c.TLSCert == "":
		return errors.New("tls: a client CA (--client-ca) needs the server's certificate and key (--tls-cert, --tls-key)")
	case c.ClientCA != "" && c.Tokens == "":
		return errors.New("tls: a client CA (--client-ca) needs a tokens file (--tokens) that gives the certificates' names their roles")
	case c.MaxRecvMsgBytes < 0, c.RateBurst < 0, c.MaxHistory < 0:
		return errors.New("max_recv_msg_bytes, rate_burst and max_history must not be negative")
	}
	return c.checkExposure(c.Addr)
}

// checkExposure refuses a listen address beyond loopback unless TLS and
// authentication are on, or Insecure says the operator accepts the risk.
func (c Config) checkExposure(addr string) error {
	if c.Insecure || (c.TLSCert != "" && c.Tokens != "") || loopback(addr) {
		return nil
	}
	var missing []string
	if c.TLSCert == "" {
		missing = append(missing, "TLS (--tls-cert, --tls-key)")
	}
	if c.Tokens == "" {
		missing = append(missing, "authentication (--tokens)")
	}
	return fmt.Errorf("refusing to listen on %s beyond loopback without %s; set them, or pass --insecure to accept the risk", addr, strings.Join(missing, " and "))
}

// loopback reports whether addr ("host:port") listens on loopback only.
// A host name other than localhost may resolve anywhere, and an empty
// host is every interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	host, _, _ = strings.Cut(host, "%") // an IPv6 zone
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// guard is the server's transport security, authentication and per-client
// limits.
type guard struct {
	codec   *malformed
	creds   credentials.TransportCredentials // nil: plaintext
	auth    *auth.Authenticator              // nil: no authentication
	rates   *clientRates                     // nil: no rate limit
	streams *clientStreams                   // nil: no stream limit
}

func newGuard(cfg Config) (*guard, error) {
	g := &guard{codec: newMalformed()}
	if cfg.TLSCert != "" {
		tc, err := tlsconf.Server(tlsconf.Files{Cert: cfg.TLSCert, Key: cfg.TLSKey, ClientCA: cfg.ClientCA}, cfg.Logger)
		if err != nil {
			return nil, err
		}
		g.creds = credentials.NewTLS(tc)
	}
	if cfg.Tokens != "" {
		a, err := auth.Load(cfg.Tokens, auth.Options{Now: cfg.Clock.Now, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		g.auth = a
	}
	if cfg.RateLimit > 0 {
		g.rates = newClientRates(cfg.RateLimit, cfg.RateBurst, cfg.Clock)
	}
	if cfg.MaxStreamsPerClient > 0 {
		g.streams = newClientStreams(cfg.MaxStreamsPerClient)
	}
	return g, nil
}

// options are the transport's safe defaults and credentials.
func (g *guard) options(cfg Config) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes),
		grpc.MaxHeaderListSize(maxHeaderListBytes),
		grpc.ForceServerCodecV2(g.codec),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		// A connection takes its 32 KiB write buffer from a pool while it
		// writes and gives it back after, and reads through a small
		// buffer: a farm of mostly silent device streams does not keep
		// 64 KiB of buffers per printer.
		grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(readBufferBytes),
	}
	if g.creds != nil {
		opts = append(opts, grpc.Creds(g.creds))
	}
	return opts
}

// guarded selects the calls that need credentials: all but the open
// services (health, reflection).
var guarded = selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool { return !auth.Open(c.Service) })

// unary returns the unary interceptors, in order: requests that did not
// decode end first; then authentication and authorization, so that the
// limits count principals.
func (g *guard) unary() []grpc.UnaryServerInterceptor {
	out := []grpc.UnaryServerInterceptor{g.codec.unary()}
	if g.auth != nil {
		out = append(out, selector.UnaryServerInterceptor(grpcauth.UnaryServerInterceptor(g.authorize), guarded))
	}
	if g.rates != nil {
		out = append(out, ratelimit.UnaryServerInterceptor(g.rates))
	}
	return out
}

// stream returns the stream interceptors, in the order of unary.
func (g *guard) stream() []grpc.StreamServerInterceptor {
	out := []grpc.StreamServerInterceptor{g.codec.stream()}
	if g.auth != nil {
		out = append(out, selector.StreamServerInterceptor(grpcauth.StreamServerInterceptor(g.authorize), guarded))
	}
	if g.rates != nil {
		out = append(out, ratelimit.StreamServerInterceptor(g.rates))
	}
	if g.streams != nil {
		out = append(out, selector.StreamServerInterceptor(g.streams.interceptor(), guarded))
	}
	return out
}

// authorize authorizes a call and adds its principal to the fields the
// logging interceptor logs when the call ends.
func (g *guard) authorize(ctx context.Context) (context.Context, error) {
	ctx, err := g.auth.Authorize(ctx)
	if err != nil {
		return nil, err
	}
	if p, ok := auth.FromContext(ctx); ok {
		logging.AddFields(ctx, logging.Fields{logPrincipal, p.Name})
	}
	return ctx, nil
}

// logPrincipal is the log attribute of a call's principal.
const logPrincipal = "principal"

// Reload re-reads the tokens file (dfsmrd calls it on SIGHUP); the TLS
// files reload on their own when they change. Without a tokens file it does
// nothing.
func (s *Server) Reload() error {
	if s.guard.auth == nil {
		return nil
	}
	return s.guard.auth.Reload()
}
