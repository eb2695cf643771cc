// Package tlsconf builds the server's TLS configuration from PEM files and
// reloads those files when they change, so that a renewed certificate (or
// client CA bundle) takes effect on the next handshake without a restart.
//
// Every handshake stats the files (cheap next to the handshake itself) and
// re-reads them when one changed: a different file (an atomic rename or a
// symlink swap, as certificate managers do), a different modification time
// or a different size. A change that does not load (a half-written key, a
// certificate that does not match its key) is logged once and the previous
// configuration stays in force.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// MinVersion is the oldest TLS version the server accepts.
const MinVersion = tls.VersionTLS12

// Files names the PEM files of a server's TLS configuration.
type Files struct {
	// Cert is the server's certificate chain, leaf first.
	Cert string
	// Key is the private key of Cert.
	Key string
	// ClientCA, when set, is a bundle of CA certificates: every client must
	// then present a certificate they signed (mutual TLS).
	ClientCA string
}

// Server returns a TLS configuration serving f, loaded now (so that a
// mistake fails at start) and reloaded on change. It advertises HTTP/2
// (ALPN "h2"), which gRPC needs.
func Server(f Files, log *slog.Logger) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("tls: both a certificate and a key file are needed")
	}
	if log == nil {
		log = slog.Default()
	}
	r := &reloader{files: f, log: log.With("component", "tls")}
	stats, err := r.stat()
	if err != nil {
		return nil, err
	}
	cfg, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cfg, r.stats = cfg, stats
	return &tls.Config{
		MinVersion:         MinVersion,
		NextProtos:         []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return r.current(), nil },
	}, nil
}

// reloader holds the configuration loaded from the files and what the
// files looked like when it was loaded.
type reloader struct {
	files Files
	log   *slog.Logger

	mu     sync.Mutex
	cfg    *tls.Config
	stats  []os.FileInfo // of the files cfg was loaded from
	failed []os.FileInfo // of the files that last failed to load
}

// paths lists the configured files, in a fixed order.
func (r *reloader) paths() []string {
	p := []string{r.files.Cert, r.files.Key}
	if r.files.ClientCA != "" {
		p = append(p, r.files.ClientCA)
	}
	return p
}

func (r *reloader) stat() ([]os.FileInfo, error) {
	paths := r.paths()
	out := make([]os.FileInfo, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		out[i] = fi
	}
	return out, nil
}

// same reports whether two stat lists describe the same file contents, as
// far as stat can tell.
func same(a, b []os.FileInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !os.SameFile(a[i], b[i]) || !a[i].ModTime().Equal(b[i].ModTime()) || a[i].Size() != b[i].Size() {
			return false
		}
	}
	return true
}

// current returns the configuration for a new handshake, reloading the
// files first when they changed.
func (r *reloader) current() *tls.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	stats, err := r.stat()
	if err != nil {
		// A file is missing for a moment (mid-swap) or for good: keep
		// serving what is loaded.
		return r.cfg
	}
	if same(stats, r.stats) || same(stats, r.failed) {
		return r.cfg
	}
	cfg, err := r.load()
	if err != nil {
		r.failed = stats
		r.log.Error("tls files changed but do not load; keeping the previous certificate", "err", err)
		return r.cfg
	}
	r.cfg, r.stats, r.failed = cfg, stats, nil
	r.log.Info("tls files reloaded", "cert", r.files.Cert, "not_after", cfg.Certificates[0].Leaf.NotAfter.UTC().Format(time.RFC3339))
	return cfg
}

func (r *reloader) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(r.files.Cert, r.files.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: load %s and %s: %w", r.files.Cert, r.files.Key, err)
	}
	cfg := &tls.Config{
		MinVersion:   MinVersion,
		NextProtos:   []string{"h2"},
		Certificates: []tls.Certificate{cert},
	}
	if r.files.ClientCA != "" {
		pool, err := LoadPool(r.files.ClientCA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// LoadPool reads a PEM bundle of CA certificates.
func LoadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: %s holds no PEM certificate", file)
	}
	return pool, nil
}
