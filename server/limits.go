package server

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/server/auth"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// DefaultMaxConcurrentReads is the default of Config.MaxConcurrentReads:
// enough to keep both cores of a small server busy with reads, about
// 64 MiB at most.
const DefaultMaxConcurrentReads = 8

// Defaults of the device report limit: a printer reports on every change
// of state and, at most, a heartbeat a second; a hundred a second is a
// device gone wrong.
const (
	DefaultDeviceReportRate  = 100
	DefaultDeviceReportBurst = 200
)

// limitDefaults sets the zero fields of c's resource bounds.
func (c Config) limitDefaults() Config {
	if c.MaxConcurrentReads == 0 {
		c.MaxConcurrentReads = DefaultMaxConcurrentReads
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnectionsPerIP == 0 {
		c.MaxConnectionsPerIP = DefaultMaxConnectionsPerIP
	}
	if c.DeviceReportRate == 0 {
		c.DeviceReportRate = DefaultDeviceReportRate
	}
	if c.DeviceReportBurst == 0 {
		c.DeviceReportBurst = DefaultDeviceReportBurst
	}
	return c
}

// maxTrackedClients is the number of clients whose rate buckets are kept
// before idle ones are dropped. Dropping a bucket that has refilled loses
// nothing; see clientRates.sweep.
const maxTrackedClients = 4096

// clientKey names the client of a call for its limits: the authenticated
// principal, or the peer's IP address when the server runs without
// authentication. It is never read from request metadata, which the client
// controls.
func clientKey(ctx context.Context) string {
	if p, ok := auth.FromContext(ctx); ok {
		return "principal:" + p.Name
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		host, _, err := net.SplitHostPort(p.Addr.String())
		if err != nil {
			return "addr:" + p.Addr.String()
		}
		return "ip:" + host
	}
	return "unknown"
}

// clientRates is a token bucket per client, the Limiter of
// go-grpc-middleware's ratelimit interceptors.
type clientRates struct {
	limit rate.Limit
	burst int
	clock clock.Clock

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

func newClientRates(perSecond float64, burst int, c clock.Clock) *clientRates {
	return &clientRates{limit: rate.Limit(perSecond), burst: burst, clock: c, buckets: map[string]*rate.Limiter{}}
}

// Limit takes a token from the caller's bucket; an empty bucket is an
// error, which the interceptor turns into RESOURCE_EXHAUSTED.
func (r *clientRates) Limit(ctx context.Context) error {
	key := clientKey(ctx)
	now := r.clock.Now()
	r.mu.Lock()
	b, ok := r.buckets[key]
	if !ok {
		if len(r.buckets) >= maxTrackedClients {
			r.sweep(now)
		}
		b = rate.NewLimiter(r.limit, r.burst)
		r.buckets[key] = b
	}
	allowed := b.AllowN(now, 1)
	r.mu.Unlock()
	if !allowed {
		return fmt.Errorf("client %s is over its rate limit of %g calls/s (burst %d; rate_limit, rate_burst)", key, float64(r.limit), r.burst)
	}
	return nil
}

// sweep drops the buckets that have refilled: a new bucket for the same
// client starts full too, so nothing is lost.
func (r *clientRates) sweep(now time.Time) {
	for k, b := range r.buckets {
		if b.TokensAt(now) >= float64(r.burst) {
			delete(r.buckets, k)
		}
	}
}

// clientStreams counts the open streams of each client and refuses more
// than max.
type clientStreams struct {
	max  int
	mu   sync.Mutex
	open map[string]int
}

func newClientStreams(max int) *clientStreams {
	return &clientStreams{max: max, open: map[string]int{}}
}

func (c *clientStreams) interceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		key := clientKey(ss.Context())
		c.mu.Lock()
		n := c.open[key]
		if n >= c.max {
			c.mu.Unlock()
			return status.Errorf(codes.ResourceExhausted, "client %s has %d streams open; the limit is %d (max_streams_per_client)", key, n, c.max)
		}
		c.open[key] = n + 1
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			if c.open[key]--; c.open[key] == 0 {
				delete(c.open, key)
			}
			c.mu.Unlock()
		}()
		return handler(srv, ss)
	}
}

// readSlots bounds the big reads (List pages, history pages) being built
// at once: each holds up to MaxResponseBytes of records and a store chunk,
// so together they stay within MaxConcurrentReads times about 8 MiB,
// whatever the number of connections. A nil readSlots does not bound.
type readSlots chan struct{}

func newReadSlots(n int) readSlots {
	if n < 0 {
		return nil
	}
	return make(readSlots, n)
}

// acquire waits for a slot, or for ctx to end, and returns its release.
func (r readSlots) acquire(ctx context.Context) (release func(), err error) {
	if r == nil {
		return func() {}, nil
	}
	select {
	case r <- struct{}{}:
		return func() { <-r }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// flushGrace is how long a stopping server waits, once every handler has
// returned, for the responses to reach their clients before it closes the
// connections: a client that stopped reading would otherwise hold the stop
// for the whole StopTimeout, its stream's status queued behind data it
// never reads.
const flushGrace = time.Second

// activeCalls counts the handlers running.
type activeCalls struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0; nil until idle asks
}

func (c *activeCalls) enter() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *activeCalls) leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n--; c.n == 0 && c.zero != nil {
		close(c.zero)
		c.zero = nil
	}
}

func (c *activeCalls) running() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// idle returns a channel closed once no handler runs.
func (c *activeCalls) idle() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.zero == nil {
		c.zero = make(chan struct{})
		if c.n == 0 {
			close(c.zero)
			ch := c.zero
			c.zero = nil
			return ch
		}
	}
	return c.zero
}

func (c *activeCalls) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c.enter()
	defer c.leave()
	return handler(ctx, req)
}

func (c *activeCalls) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	c.enter()
	defer c.leave()
	return handler(srv, ss)
}
