// Package server wires dfsmr together: the bbolt store, the engine, the
// changelog hub and the gRPC services, with health and reflection.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/changes"
	"github.com/dfsmr/dfsmr/server/clock"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store/bolt"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Defaults of Config.
const (
	// DefaultAddr is loopback only: exposing dfsmr takes a deliberate choice.
	DefaultAddr = "127.0.0.1:5003"
	// DefaultDB is the bbolt file, relative to the working directory.
	DefaultDB = "dfsmr.db"
	// DefaultStopTimeout bounds a graceful stop before it is forced.
	DefaultStopTimeout = 10 * time.Second
)

// Config configures a Server. Flags and environment fill it in cmd/dfsmrd.
type Config struct {
	// Addr is the listen address; default DefaultAddr.
	Addr string
	// DB is the path of the bbolt file; default DefaultDB. It is created
	// when missing.
	DB string
	// MachinesDir, when set, is a directory whose *.yaml files are defined
	// at start, after the bundled machines.
	MachinesDir string
	// NoBundled skips defining the bundled machines at start.
	NoBundled bool
	// StopTimeout bounds a graceful stop; default DefaultStopTimeout.
	StopTimeout time.Duration
	// Logger receives all logs; default slog.Default().
	Logger *slog.Logger
	// Clock is the time source; default the wall clock.
	Clock clock.Clock
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.DB == "" {
		c.DB = DefaultDB
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return c
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.StopTimeout < 0 {
		return errors.New("stop timeout must not be negative")
	}
	if c.MachinesDir != "" {
		if fi, err := os.Stat(c.MachinesDir); err != nil || !fi.IsDir() {
			return fmt.Errorf("machines dir %q is not a directory", c.MachinesDir)
		}
	}
	return nil
}

// Server is a running dfsmr: store, engine, changelog and gRPC.
type Server struct {
	cfg    Config
	log    *slog.Logger
	store  *bolt.Store
	engine *engine.Engine
	hub    *changes.Hub
	grpc   *grpc.Server
	health *health.Server
	lis    net.Listener

	stopOnce sync.Once
	stopErr  error
	serveErr chan error
}

// New opens the store, defines the bundled (and configured) machines and
// builds the gRPC server. Nothing listens until Start.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "server"), serveErr: make(chan error, 1)}

	// The store's commit hook feeds the engine and the hub, which need the
	// store to exist first: route it through a pointer set below.
	var onCommit atomic.Pointer[func([]fsm.Change)]
	st, err := bolt.Open(cfg.DB, bolt.Options{
		Logger: cfg.Logger,
		CommitHook: func(c []fsm.Change) {
			if f := onCommit.Load(); f != nil {
				(*f)(c)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.DB, err)
	}
	s.store = st
	s.hub = changes.New(st, changes.Options{Logger: cfg.Logger})
	s.engine = engine.New(st, engine.Options{Clock: cfg.Clock, Logger: cfg.Logger})
	hook := func(c []fsm.Change) {
		s.hub.Publish(c)
		s.engine.OnCommit(c)
	}
	onCommit.Store(&hook)

	if err := s.loadMachines(ctx); err != nil {
		st.Close()
		return nil, err
	}

	h := &handlers{eng: s.engine, hub: s.hub, log: cfg.Logger}
	s.grpc = grpc.NewServer(serverOptions(cfg.Logger)...)
	pb.RegisterMachineServiceServer(s.grpc, h)
	pb.RegisterInstanceServiceServer(s.grpc, h)
	pb.RegisterWorkServiceServer(s.grpc, h)
	pb.RegisterChangesServiceServer(s.grpc, h)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	return s, nil
}

func serverOptions(log *slog.Logger) []grpc.ServerOption {
	rpcLog := log.With("component", "grpc")
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		rpcLog.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(codeLevel),
	}
	panicked := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		rpcLog.Error("panic in handler", "panic", p)
		return status.Error(codes.Internal, "internal error")
	})
	return []grpc.ServerOption{
		// Recovery is outermost so that a panic anywhere below, including
		// in logging, becomes INTERNAL instead of killing the server.
		grpc.ChainUnaryInterceptor(
			recovery.UnaryServerInterceptor(panicked),
			logging.UnaryServerInterceptor(logger, logOpts...),
			unaryErrors(log),
		),
		grpc.ChainStreamInterceptor(
			recovery.StreamServerInterceptor(panicked),
			logging.StreamServerInterceptor(logger, logOpts...),
			streamErrors(log),
		),
	}
}

// codeLevel logs successful calls at debug (a busy server makes thousands
// a second), the caller's mistakes at info, and the server's failures at
// error.
func codeLevel(c codes.Code) logging.Level {
	switch c {
	case codes.OK:
		return logging.LevelDebug
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
		return logging.LevelError
	}
	return logging.LevelInfo
}

// unaryErrors maps handler errors to statuses in one place.
func unaryErrors(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			return nil, toStatus(log, info.FullMethod, err)
		}
		return resp, nil
	}
}

func streamErrors(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return toStatus(log, info.FullMethod, handler(srv, ss))
	}
}

// loadMachines defines the bundled machines and those of MachinesDir.
// Defining unchanged content is a no-op, so this is cheap on every start.
func (s *Server) loadMachines(ctx context.Context) error {
	var srcs []machines.Source
	if !s.cfg.NoBundled {
		srcs = machines.Bundled()
	}
	if dir := s.cfg.MachinesDir; dir != "" {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			return err
		}
		more, _ := filepath.Glob(filepath.Join(dir, "*.yml"))
		files = append(files, more...)
		sort.Strings(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			srcs = append(srcs, machines.Source{File: f, Data: b})
		}
	}
	for _, src := range srcs {
		info, created, err := s.engine.DefineMachine(ctx, src.File, src.Data, engine.SystemActor)
		if err != nil {
			return fmt.Errorf("define %s: %w", src.File, err)
		}
		if created {
			s.log.Info("machine defined", "machine", info.ID, "version", info.Record.Version, "file", src.File)
		}
	}
	return nil
}

// Engine returns the server's engine (for in-process tools and tests).
func (s *Server) Engine() *engine.Engine { return s.engine }

// StoreStats returns the store's commit counters (for in-process tools,
// such as the benchmark, and tests).
func (s *Server) StoreStats() bolt.Stats { return s.store.Stats() }

// Start listens on the configured address (or lis, when not nil), runs the
// engine and serves gRPC in the background. It returns once the server
// accepts connections.
func (s *Server) Start(ctx context.Context, lis net.Listener) error {
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return err
		}
	}
	s.lis = lis
	if err := s.engine.Start(ctx); err != nil {
		return err
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	go func() { s.serveErr <- s.grpc.Serve(lis) }()
	s.log.Info("serving", "addr", lis.Addr().String(), "db", s.cfg.DB)
	return nil
}

// Addr is the address the server listens on (after Start).
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Wait blocks until the gRPC server stops serving.
func (s *Server) Wait() error { return <-s.serveErr }

// Stop stops gracefully: stop accepting, end streams and finish in-flight
// calls (forced after StopTimeout or when ctx ends), stop the engine, close
// the changelog hub and then the store, which commits what is queued. It is
// idempotent and safe when the server was never started.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.health.Shutdown()
		// Streams never end on their own: close the hub first so that
		// watchers get UNAVAILABLE and GracefulStop can finish.
		s.hub.Close()
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		timer := time.NewTimer(s.cfg.StopTimeout)
		defer timer.Stop()
		select {
		case <-done:
		case <-timer.C:
			s.log.Warn("graceful stop timed out; forcing")
			s.grpc.Stop()
		case <-ctx.Done():
			s.grpc.Stop()
		}
		var errs []string
		if err := s.engine.Stop(ctx); err != nil {
			errs = append(errs, err.Error())
		}
		if err := s.store.Close(); err != nil {
			errs = append(errs, err.Error())
		}
		if len(errs) > 0 {
			s.stopErr = errors.New(strings.Join(errs, "; "))
		}
		s.log.Info("stopped")
	})
	return s.stopErr
}
