package tlsconf_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/dfsmr/dfsmr/server/tlsconf"
	"github.com/dfsmr/dfsmr/server/tlsconf/tlstest"
)

// serve accepts TLS connections with cfg and answers each with one byte,
// so that the client's first read completes the handshake (in TLS 1.3 the
// server checks the client certificate after the client's side is done).
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte{1})
			}()
		}
	}()
	return lis.Addr().String()
}

// handshake dials addr and returns the serial number of the server's
// certificate, or the error of the handshake or the first read.
func handshake(addr string, roots *x509.CertPool, client *tls.Certificate) (string, error) {
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16), nil
}

func pool(t *testing.T, ca *tlstest.CA) *x509.CertPool {
	t.Helper()
	p, err := tlsconf.LoadPool(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestReloadOnChange(t *testing.T) {
	ca := tlstest.NewCA(t, "test")
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := ca.Server(t, "dfsmr")
	tlstest.Install(t, first, cert, key)
	cfg, err := tlsconf.Server(tlsconf.Files{Cert: cert, Key: key}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg)
	roots := pool(t, ca)

	got, err := handshake(addr, roots, nil)
	if err != nil || got != first.Cert.SerialNumber.Text(16) {
		t.Fatalf("first handshake: serial %s, %v; want %s", got, err, first.Cert.SerialNumber.Text(16))
	}

	second := ca.Server(t, "dfsmr")
	tlstest.Install(t, second, cert, key)
	got, err = handshake(addr, roots, nil)
	if err != nil || got != second.Cert.SerialNumber.Text(16) {
		t.Fatalf("after the swap: serial %s, %v; want the new %s", got, err, second.Cert.SerialNumber.Text(16))
	}

	// A broken replacement keeps the working certificate in force.
	if err := os.WriteFile(key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = handshake(addr, roots, nil)
	if err != nil || got != second.Cert.SerialNumber.Text(16) {
		t.Fatalf("after a broken swap: serial %s, %v; want the previous %s", got, err, second.Cert.SerialNumber.Text(16))
	}
}

func TestClientCertificateRequired(t *testing.T) {
	ca := tlstest.NewCA(t, "test")
	srv := ca.Server(t, "dfsmr")
	cfg, err := tlsconf.Server(tlsconf.Files{Cert: srv.CertFile, Key: srv.KeyFile, ClientCA: ca.CertFile}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg)
	roots := pool(t, ca)

	if _, err := handshake(addr, roots, nil); err == nil {
		t.Fatal("a client without a certificate got through")
	}
	other := tlstest.NewCA(t, "other").Client(t, "intruder")
	otherPair, err := tls.LoadX509KeyPair(other.CertFile, other.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, roots, &otherPair); err == nil {
		t.Fatal("a client certificate from another CA got through")
	}
	good := ca.Client(t, "worker-1")
	goodPair, err := tls.LoadX509KeyPair(good.CertFile, good.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, roots, &goodPair); err != nil {
		t.Fatalf("a client certificate of the CA: %v", err)
	}
}

func TestServerRejectsBadFiles(t *testing.T) {
	ca := tlstest.NewCA(t, "test")
	a, b := ca.Server(t, "a"), ca.Server(t, "b")
	for name, f := range map[string]tlsconf.Files{
		"no key":          {Cert: a.CertFile},
		"missing file":    {Cert: a.CertFile, Key: filepath.Join(t.TempDir(), "nope.pem")},
		"mismatched key":  {Cert: a.CertFile, Key: b.KeyFile},
		"CA is not a PEM": {Cert: a.CertFile, Key: a.KeyFile, ClientCA: a.KeyFile},
	} {
		if _, err := tlsconf.Server(f, quiet()); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
