package server

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/dfsmr/dfsmr/internal/clock"
)

// Defaults of Config's connection limits.
const (
	// DefaultMaxConnections bounds the open connections of the server: far
	// below a typical raised file limit, far above what a fleet of workers
	// and devices needs (a client multiplexes its calls on one
	// connection).
	DefaultMaxConnections = 10000
	// DefaultMaxConnectionsPerIP bounds the open connections from one IP
	// address: enough for the workers and devices of a big host or a NAT,
	// few enough that one host cannot take every connection.
	DefaultMaxConnectionsPerIP = 1000
)

// refusalLogInterval is how often a refused connection is logged at most;
// the log line counts the refusals since the previous one.
const refusalLogInterval = 10 * time.Second

// fileReserve is the number of descriptors kept for everything but client
// connections (the database, the metrics endpoint, logs) when max
// connections is compared with the open file limit.
const fileReserve = 64

// limitListener accepts at most max connections in all and perIP from one
// IP address (either negative: no limit). A connection over a limit is
// closed at once, so that its client fails fast (UNAVAILABLE) instead of
// waiting in the kernel's backlog, and the refusal is logged and counted.
type limitListener struct {
	net.Listener
	max, perIP int
	log        *slog.Logger
	clock      clock.Clock
	refused    func(limit string)

	mu    sync.Mutex
	total int
	byIP  map[string]int
	// Refusals since the last log line, and when it was written.
	unlogged int
	lastLog  time.Time
}

func newLimitListener(lis net.Listener, max, perIP int, log *slog.Logger, c clock.Clock, refused func(limit string)) *limitListener {
	return &limitListener{Listener: lis, max: max, perIP: perIP, log: log, clock: c, refused: refused, byIP: map[string]int{}}
}

// Accept returns the next connection within the limits, closing those
// over them.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		if limit := l.admit(ip); limit != "" {
			_ = c.Close()
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

// admit counts a connection from ip, or returns the limit it is over.
func (l *limitListener) admit(ip string) (limit string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.max >= 0 && l.total >= l.max:
		limit = "total"
	case l.perIP >= 0 && l.byIP[ip] >= l.perIP:
		limit = "per_ip"
	default:
		l.total++
		l.byIP[ip]++
		return ""
	}
	l.refused(limit)
	l.unlogged++
	if now := l.clock.Now(); l.lastLog.IsZero() || now.Sub(l.lastLog) >= refusalLogInterval {
		l.log.Warn("connection refused: connection limit reached",
			"limit", limit, "remote_ip", ip, "open", l.total, "open_from_ip", l.byIP[ip],
			"max_connections", l.max, "max_connections_per_ip", l.perIP, "refused_since_last_log", l.unlogged)
		l.lastLog, l.unlogged = now, 0
	}
	return limit
}

func (l *limitListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

// limitedConn gives its slot back when closed, once.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

func remoteIP(a net.Addr) string {
	if tcp, ok := a.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// checkFileLimit raises the open file limit (see raiseFileLimit) and warns
// when MaxConnections cannot be reached under it: past the limit, accepting
// fails with "too many open files" and clients time out.
func (s *Server) checkFileLimit() {
	nofile, err := raiseFileLimit()
	if err != nil {
		s.log.Warn("cannot read or raise the open file limit", "err", err)
		return
	}
	if nofile == 0 {
		return // not known on this system
	}
	s.log.Info("open file limit", "nofile", nofile)
	if maxConns := s.cfg.MaxConnections; maxConns < 0 || uint64(maxConns)+fileReserve > nofile {
		s.log.Warn(fmt.Sprintf("max_connections is above the open file limit less %d; raise the hard limit (ulimit -Hn, LimitNOFILE) or lower max_connections", fileReserve),
			"max_connections", maxConns, "nofile", nofile)
	}
}
