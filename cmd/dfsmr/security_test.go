package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/auth"
	"github.com/dfsmr/dfsmr/server/tlsconf/tlstest"
)

func TestTokenCommands(t *testing.T) {
	c := &cli{t: t}
	out := c.ok("token", "new")
	var tok, hash string
	if _, err := fmt.Sscanf(out, "token: %s\ntoken_sha256: %s\n", &tok, &hash); err != nil || auth.HashToken(tok) != hash {
		t.Fatalf("token new printed %q (%v)", out, err)
	}
	if r := c.runIn(tok+"\n", "token", "hash"); r.code != 0 || strings.TrimSpace(r.out) != hash {
		t.Fatalf("token hash: %+v; want %s", r, hash)
	}
	c.fails(exitFailed, []string{"no token on standard input"}, "token", "hash")
}

// TestSecureServer runs the CLI against a server with TLS, mutual TLS and
// a tokens file.
func TestSecureServer(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "cli-test")
	pair := ca.Server(t, "dfsmrd")
	reader := ca.Client(t, "reader-host")
	tok := auth.NewToken()
	tokens := filepath.Join(dir, "tokens.yaml")
	content := fmt.Sprintf("principals:\n  - {name: ops, roles: [operator], token_sha256: %s}\n  - {name: watcher, roles: [reader], cert: reader-host}\n", auth.HashToken(tok))
	if err := os.WriteFile(tokens, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := server.New(t.Context(), server.Config{
		Addr: "127.0.0.1:0", DB: filepath.Join(dir, "dfsmr.db"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		TLSCert: pair.CertFile, TLSKey: pair.KeyFile, ClientCA: ca.CertFile, Tokens: tokens,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	c := &cli{t: t, addr: s.Addr(), dir: dir}

	c.ok("--tls-ca", ca.CertFile, "--tls-cert", reader.CertFile, "--tls-key", reader.KeyFile, "machines")
	c.fails(exitFailed, []string{"PERMISSION_DENIED", "watcher", "operator"},
		"--tls-ca", ca.CertFile, "--tls-cert", reader.CertFile, "--tls-key", reader.KeyFile, "start", "report", "--id", "r1")

	t.Setenv(envToken, tok)
	c.ok("--tls-ca", ca.CertFile, "--tls-cert", reader.CertFile, "--tls-key", reader.KeyFile, "start", "report", "--id", "r1")
	c.fails(exitUsage, []string{"--token without TLS goes only to a loopback address"}, "--addr", "192.0.2.7:5003", "machines")

	t.Setenv(envToken, "")
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"--addr", s.Addr(), "--tls-ca", ca.CertFile, "machines"}, strings.NewReader(""), &out, &errb)
	if code != exitFailed || !strings.Contains(errb.String(), "UNAVAILABLE") {
		t.Fatalf("without a client certificate: exit %d, stderr %q; want the handshake refused", code, errb.String())
	}
}

// TestTokenOnPlaintextLoopback runs the CLI with --token against a server
// with a tokens file and no TLS on 127.0.0.1, which the server allows:
// the token works there, and the CLI never sends it in clear elsewhere.
func TestTokenOnPlaintextLoopback(t *testing.T) {
	dir := t.TempDir()
	tok := auth.NewToken()
	tokens := filepath.Join(dir, "tokens.yaml")
	content := fmt.Sprintf("principals:\n  - {name: ops, roles: [operator], token_sha256: %s}\n", auth.HashToken(tok))
	if err := os.WriteFile(tokens, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := server.New(t.Context(), server.Config{
		Addr: "127.0.0.1:0", DB: filepath.Join(dir, "dfsmr.db"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tokens: tokens,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	c := &cli{t: t, addr: s.Addr(), dir: dir}

	c.fails(exitFailed, []string{"UNAUTHENTICATED"}, "machines")
	contains(t, c.ok("--token", tok, "start", "report", "--id", "r1"), "r1", "created")
	_, port, _ := strings.Cut(s.Addr(), ":")
	contains(t, c.ok("--addr", "localhost:"+port, "--token", tok, "get", "r1", "--history"), "started", "by ops")
	for _, addr := range []string{"192.0.2.7:5003", "example.com:5003", "[2001:db8::1]:5003"} {
		c.fails(exitUsage, []string{"--token without TLS goes only to a loopback address", addr}, "--addr", addr, "--token", tok, "machines")
	}
}
