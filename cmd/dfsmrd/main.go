// Command dfsmrd is the dfsmr server: gRPC on 127.0.0.1:5003 by default,
// state in one bbolt file, the bundled machines defined at start.
//
// Every flag can also be set through the environment (DFSMR_ADDR, DFSMR_DB,
// DFSMR_MACHINES, DFSMR_LOG_FORMAT, DFSMR_LOG_LEVEL, DFSMR_TLS_CERT, ...:
// the flag's name in upper case with DFSMR_ before it); a flag on the
// command line wins over the environment. SIGHUP re-reads the tokens file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/dfsmr/dfsmr/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("dfsmrd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg server.Config
	fs.StringVar(&cfg.Addr, "addr", env("DFSMR_ADDR", server.DefaultAddr), "listen address (env DFSMR_ADDR)")
	fs.StringVar(&cfg.DB, "db", env("DFSMR_DB", server.DefaultDB), "bbolt database file, created if missing (env DFSMR_DB)")
	fs.StringVar(&cfg.MachinesDir, "machines", env("DFSMR_MACHINES", ""), "directory of extra *.yaml machine definitions to define at start (env DFSMR_MACHINES)")
	logFormat := fs.String("log-format", env("DFSMR_LOG_FORMAT", "text"), "log format: text or json (env DFSMR_LOG_FORMAT)")
	logLevel := fs.String("log-level", env("DFSMR_LOG_LEVEL", "info"), "log level: debug, info, warn or error (env DFSMR_LOG_LEVEL)")
	securityFlags(fs, &cfg)
	if err := setFromEnv(fs); err != nil {
		fmt.Fprintln(stderr, "dfsmrd:", err)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "dfsmrd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "dfsmrd:", err)
		return 2
	}
	cfg.Logger = log

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := server.New(ctx, cfg)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	if err := s.Start(ctx, nil); err != nil {
		log.Error("listen failed", "err", err)
		s.Stop(context.Background())
		return 1
	}
	defer reloadOnHangup(s, log)()
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Wait() }()
	select {
	case <-ctx.Done():
		log.Info("stopping: signal received; a second signal forces the stop")
	case err := <-serveErr:
		log.Error("serve failed", "err", err)
	}
	stop() // a second signal now kills the process the default way
	if err := s.Stop(context.Background()); err != nil {
		log.Error("stop", "err", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}
