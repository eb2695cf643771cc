// Command dfsmrd is the dfsmr server: gRPC on 127.0.0.1:5003 by default,
// state in one bbolt file, the bundled machines defined at start.
//
// Every setting of server.Config is a flag (--stop-timeout), an
// environment variable (DFSMR_STOP_TIMEOUT) and a key of the optional YAML
// file named by --config or DFSMR_CONFIG (stop_timeout). A flag wins over
// the environment, which wins over the file, which wins over the default.
// --print-config prints the effective configuration as YAML and exits;
// --version prints the build. docs/operations.md lists every setting.
// SIGHUP re-reads the tokens file.
//
// dfsmrd listens before it opens the database, so a busy port fails
// without touching the file, and logs the database's absolute path.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/dfsmr/dfsmr/internal/config"
	"github.com/dfsmr/dfsmr/internal/version"
	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/store/bolt"
	"github.com/spf13/cobra"
)

// envPrefix starts the name of every environment variable dfsmrd reads.
const envPrefix = "DFSMR"

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // the server failed to start or to stop cleanly
	exitUsage  = 2 // the command line or the configuration is wrong
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a mistake on the command line: reported with a hint to
// --help.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// checkError is a database that dfsmrd check found damaged (or could not
// read): exit 1, not a usage error.
type checkError struct{ error }

func (e checkError) Unwrap() error { return e.error }

// loadConfig fills a server.Config from the defaults, the config file, the
// environment and args. done is true when args asked for help, the version
// or the printout, which went to stdout.
func loadConfig(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) (cfg server.Config, done bool, err error) {
	cfg = server.Config{}.WithDefaults()
	cfg.Logger, cfg.Clock = nil, nil
	file, _ := lookupEnv(envPrefix + "_CONFIG")
	var printConfig, ran bool
	cmd := &cobra.Command{
		Use:   "dfsmrd [flags]",
		Short: "The dfsmr server",
		Long: `dfsmrd is the dfsmr server: gRPC on 127.0.0.1:5003 by default, state in one
bbolt file, the bundled machines defined at start.

Every setting is a flag (--stop-timeout), an environment variable
(DFSMR_STOP_TIMEOUT) and a key of the YAML file named by --config or
DFSMR_CONFIG (stop_timeout). A flag wins over the environment, which wins
over the file, which wins over the default. SIGHUP re-reads the tokens file.

Exit codes: 0 stopped cleanly; 1 failed to start or to stop; 2 the command
line or the configuration is wrong.`,
		Version:       version.String("dfsmrd"),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unexpected argument %q", args[0])}
			}
			return nil
		},
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		RunE:              func(*cobra.Command, []string) error { ran = true; return nil },
	}
	cmd.SetVersionTemplate("{{.Version}}\n")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		// -addr (one dash, as Go's flag package takes it) reads as the
		// shorthands -a -d -d -r: name the flag that was meant.
		for _, a := range args {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
			if len(a) > 2 && a[0] == '-' && a[1] != '-' && c.Flags().Lookup(name) != nil {
				return usageError{fmt.Errorf("%w (flags take two dashes: --%s)", err, name)}
			}
		}
		return usageError{err}
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE",
		Short: "Check a database file: its structure, every record's checksum, the indexes",
		Long: `check reads a database file without changing it: the meta pages, every
reachable page, every record's checksum and encoding, bbolt's own consistency
check, and the indexes against the records. It prints a summary and exits 0
for a sound file, 1 for a damaged one. It refuses a file a running dfsmrd
holds: check a backup of it instead (dfsmr backup FILE).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("check takes one database file, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			if err := bolt.Check(args[0], stdout); err != nil {
				return checkError{err}
			}
			return nil
		},
	})
	fs := cmd.Flags()
	fs.SortFlags = false
	b := config.Bind(fs, &cfg, envPrefix)
	fs.StringVar(&file, "config", file, "YAML file of settings; flags and environment override it (env "+envPrefix+"_CONFIG)")
	fs.BoolVar(&printConfig, "print-config", false, "print the effective configuration as YAML, secrets redacted, and exit")
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.Execute(); err != nil {
		return cfg, false, err
	}
	if !ran { // --help or --version
		return cfg, true, nil
	}
	if err := b.Load(file, lookupEnv); err != nil {
		return cfg, false, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, false, err
	}
	if printConfig {
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
	var usage usageError
	switch {
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "dfsmrd: %v\nRun 'dfsmrd --help' for usage.\n", err)
		return exitUsage
	case errors.As(err, &checkError{}):
		fmt.Fprintln(stderr, "dfsmrd:", err)
		return exitFailed
	case err != nil:
		fmt.Fprintln(stderr, "dfsmrd:", err)
		return exitUsage
	case done:
		return exitOK
	}
	log, err := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		fmt.Fprintln(stderr, "dfsmrd:", err)
		return exitUsage
	}
	cfg.Logger = log
	// The absolute path says which file a relative --db names, in the log
	// and in every error about it.
	if abs, err := filepath.Abs(cfg.DB); err == nil {
		cfg.DB = abs
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx := context.Background()
	// Listen first: a second dfsmrd started by mistake on a busy port
	// fails here, before it opens (or creates) any database.
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		log.Error("listen failed", "err", err)
		return exitFailed
	}
	s, err := server.New(ctx, cfg)
	if err != nil {
		lis.Close()
		log.Error("start failed", "err", err)
		return exitFailed
	}
	if err := s.Start(ctx, lis); err != nil {
		lis.Close()
		log.Error("start failed", "err", err)
		s.Stop(context.Background())
		return exitFailed
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
		return exitFailed
	}
	return exitOK
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
