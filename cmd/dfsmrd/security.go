package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/engine"
)

// securityFlags defines the flags of transport security, authentication
// and limits on fs. Each has a DFSMR_* variable, listed in envOf.
func securityFlags(fs *flag.FlagSet, cfg *server.Config) {
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate chain of the server; turns TLS on, reloaded when the file changes (env DFSMR_TLS_CERT)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key of --tls-cert (env DFSMR_TLS_KEY)")
	fs.StringVar(&cfg.ClientCA, "client-ca", "", "PEM bundle of the CAs of client certificates; requires mutual TLS (env DFSMR_CLIENT_CA)")
	fs.StringVar(&cfg.Tokens, "tokens", "", "tokens file of principals and roles; turns authentication on, reloaded on change and on SIGHUP (env DFSMR_TOKENS)")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "allow listening beyond loopback without TLS and authentication (env DFSMR_INSECURE)")
	fs.BoolVar(&cfg.NoReflection, "no-reflection", false, "turn gRPC server reflection off (env DFSMR_NO_REFLECTION)")
	fs.Func("max-concurrent-streams", fmt.Sprintf("calls in flight per connection (default %d; env DFSMR_MAX_CONCURRENT_STREAMS)", server.DefaultMaxConcurrentStreams), uintFlag(&cfg.MaxConcurrentStreams))
	fs.IntVar(&cfg.MaxRecvMsgBytes, "max-recv-msg-bytes", 0, fmt.Sprintf("largest request message (default %d; env DFSMR_MAX_RECV_MSG_BYTES)", server.DefaultMaxRecvMsgBytes))
	fs.Float64Var(&cfg.RateLimit, "rate-limit", 0, fmt.Sprintf("calls per second per client, negative for none (default %d; env DFSMR_RATE_LIMIT)", server.DefaultRateLimit))
	fs.IntVar(&cfg.RateBurst, "rate-burst", 0, fmt.Sprintf("calls a client may make at once above --rate-limit (default %d; env DFSMR_RATE_BURST)", server.DefaultRateBurst))
	fs.IntVar(&cfg.MaxHistory, "max-history", 0, fmt.Sprintf("changes of one instance GetInstance returns, the last ones (default %d; env DFSMR_MAX_HISTORY)", engine.DefaultMaxHistory))
	fs.IntVar(&cfg.MaxStreamsPerClient, "max-streams-per-client", 0, fmt.Sprintf("open streams per client, negative for no limit (default %d; env DFSMR_MAX_STREAMS_PER_CLIENT)", server.DefaultMaxStreamsPerClient))
}

// envOf maps the flags of securityFlags to their variables.
var envOf = map[string]string{
	"tls-cert":               "DFSMR_TLS_CERT",
	"tls-key":                "DFSMR_TLS_KEY",
	"client-ca":              "DFSMR_CLIENT_CA",
	"tokens":                 "DFSMR_TOKENS",
	"insecure":               "DFSMR_INSECURE",
	"no-reflection":          "DFSMR_NO_REFLECTION",
	"max-concurrent-streams": "DFSMR_MAX_CONCURRENT_STREAMS",
	"max-recv-msg-bytes":     "DFSMR_MAX_RECV_MSG_BYTES",
	"rate-limit":             "DFSMR_RATE_LIMIT",
	"rate-burst":             "DFSMR_RATE_BURST",
	"max-streams-per-client": "DFSMR_MAX_STREAMS_PER_CLIENT",
	"max-history":            "DFSMR_MAX_HISTORY",
}

// setFromEnv sets the flags of envOf from the environment. It runs before
// the command line is parsed, so that a flag wins over its variable.
func setFromEnv(fs *flag.FlagSet) error {
	for name, env := range envOf {
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("%s=%q: %w", env, v, err)
			}
		}
	}
	return nil
}

func uintFlag(p *uint32) func(string) error {
	return func(s string) error {
		var v uint32
		if _, err := fmt.Sscan(s, &v); err != nil {
			return fmt.Errorf("want a non-negative integer")
		}
		*p = v
		return nil
	}
}

// reloadOnHangup re-reads the tokens file on every SIGHUP until the
// returned function is called.
func reloadOnHangup(s *server.Server, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-hup:
				if err := s.Reload(); err != nil {
					log.Error("reload on SIGHUP failed; keeping the previous tokens", "err", err)
				} else {
					log.Info("reloaded on SIGHUP")
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-finished
	}
}
