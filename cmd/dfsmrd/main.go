// Command dfsmrd is the dfsmr server: gRPC on 127.0.0.1:5003 by default,
// state in one bbolt file, the bundled machines defined at start.
//
// Every setting of server.Config is a flag (--stop-timeout), an
// environment variable (DFSMR_STOP_TIMEOUT) and a key of the optional YAML
// file named by --config or DFSMR_CONFIG (stop_timeout). A flag wins over
// the environment, which wins over the file, which wins over the default.
// --print-config prints the effective configuration as YAML and exits.
// docs/operations.md lists every setting. SIGHUP re-reads the tokens file.
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

	"github.com/dfsmr/dfsmr/internal/config"
	"github.com/dfsmr/dfsmr/server"
)

// envPrefix starts the name of every environment variable dfsmrd reads.
const envPrefix = "DFSMR"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// loadConfig fills a server.Config from the defaults, the config file, the
// environment and args. done is true when args asked for help or the
// printout, which went to stdout.
func loadConfig(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) (cfg server.Config, done bool, err error) {
	fs := flag.NewFlagSet("dfsmrd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg = server.Config{}.WithDefaults()
	cfg.Logger, cfg.Clock = nil, nil
	b := config.Bind(fs, &cfg, envPrefix)
	file, _ := lookupEnv(envPrefix + "_CONFIG")
	fs.StringVar(&file, "config", file, "YAML file of settings; flags and environment override it (env "+envPrefix+"_CONFIG)")
	printConfig := fs.Bool("print-config", false, "print the effective configuration as YAML, secrets redacted, and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, true, nil
		}
		return cfg, false, err
	}
	if fs.NArg() > 0 {
		return cfg, false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := b.Load(file, lookupEnv); err != nil {
		return cfg, false, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, false, err
	}
	if *printConfig {
		out, err := b.Redacted()
		if err != nil {
			return cfg, false, err
		}
		_, err = stdout.Write(out)
		return cfg, true, err
	}
	return cfg, false, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, done, err := loadConfig(args, os.LookupEnv, stdout, stderr)
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "dfsmrd:", err)
		return 2
	case done:
		return 0
	}
	log, err := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		fmt.Fprintln(stderr, "dfsmrd:", err)
		return 2
	}
	cfg.Logger = log

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx := context.Background()
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
	case sig := <-sigs:
		log.Info("stopping: signal received; a second signal forces the stop", "signal", sig.String(), "timeout", cfg.StopTimeout.String())
	case err := <-serveErr:
		log.Error("serve failed", "err", err)
	}
	// A second signal cuts the calls still open; the store is closed
	// cleanly either way.
	force, forceStop := context.WithCancel(context.Background())
	defer forceStop()
	go func() {
		select {
		case <-sigs:
			forceStop()
		case <-force.Done():
		}
	}()
	if err := s.Stop(force); err != nil {
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
