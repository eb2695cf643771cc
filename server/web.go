package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/dfsmr/dfsmr/server/changes"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/tlsconf"
	"github.com/dfsmr/dfsmr/server/web"
	"google.golang.org/grpc/status"
)

// webServer is the dashboard's HTTP listener.
type webServer struct {
	cfg Config
	h   *web.Handler
	tls *tls.Config // nil: plain HTTP
	srv *http.Server
	lis net.Listener
}

// validateHTTP checks the dashboard's settings: the same exposure rule as
// the gRPC address.
func (c Config) validateHTTP() error {
	if c.HTTPAddr == "" {
		if c.HTTPReadOnly || c.HTTPPrefix != "" {
			return errors.New("http_read_only and http_prefix need http_addr")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("http address %q: %w", c.HTTPAddr, err)
	}
	if p := c.HTTPPrefix; p != "" && (!strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/")) {
		return fmt.Errorf("http prefix %q: start it with / and do not end it with one", p)
	}
	return c.checkExposure(webAddr(c.HTTPAddr))
}

// webAddr puts a bare ":port" on loopback.
func webAddr(addr string) string {
	if host, port, _ := net.SplitHostPort(addr); host == "" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

func newWebServer(cfg Config, eng *engine.Engine, hub *changes.Hub, g *guard) (*webServer, error) {
	ws := &webServer{cfg: cfg}
	if cfg.TLSCert != "" {
		// Browsers log in with tokens: no client certificates here, even
		// when the gRPC side asks for them.
		tc, err := tlsconf.Server(tlsconf.Files{Cert: cfg.TLSCert, Key: cfg.TLSKey}, cfg.Logger)
		if err != nil {
			return nil, err
		}
		ws.tls = tc
	}
	h, err := web.New(web.Options{
		Engine:   eng,
		Hub:      hub,
		Auth:     g.auth,
		ReadOnly: cfg.HTTPReadOnly,
		Prefix:   cfg.HTTPPrefix,
		Secure:   ws.tls != nil,
		Clock:    cfg.Clock,
		Logger:   cfg.Logger,
		Status: func(err error) *status.Status {
			st, _ := status.FromError(toStatus(cfg.Logger, "web", err))
			return st
		},
	})
	if err != nil {
		return nil, err
	}
	ws.h = h
	return ws, nil
}

// start listens and serves the dashboard in the background. A nil
// webServer (no HTTPAddr) does nothing.
func (ws *webServer) start(log *slog.Logger) error {
	if ws == nil {
		return nil
	}
	lis, err := net.Listen("tcp", webAddr(ws.cfg.HTTPAddr))
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	if ws.tls != nil {
		lis = tls.NewListener(lis, ws.tls)
	}
	ws.lis = lis
	// No write timeout: event streams stay open. Headers and idle
	// connections are bounded.
	ws.srv = &http.Server{Handler: ws.h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	go func() {
		if err := ws.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("dashboard failed", "err", err)
		}
	}()
	log.Info("serving dashboard", "addr", lis.Addr().String(), "tls", ws.tls != nil, "read_only", ws.cfg.HTTPReadOnly, "prefix", ws.cfg.HTTPPrefix)
	return nil
}

// stop ends the event streams and shuts the listener down, letting page
// requests finish until ctx or StopTimeout ends. Safe on nil, never
// started, or twice.
func (ws *webServer) stop(ctx context.Context) {
	if ws == nil || ws.srv == nil {
		return
	}
	ws.h.Close()
	ctx, cancel := context.WithTimeout(ctx, ws.cfg.StopTimeout)
	defer cancel()
	if ws.srv.Shutdown(ctx) != nil {
		_ = ws.srv.Close()
	}
}

// HTTPAddr is the address of the dashboard (after Start), or "" when it
// is off.
func (s *Server) HTTPAddr() string {
	if s.web == nil || s.web.lis == nil {
		return ""
	}
	return s.web.lis.Addr().String()
}
