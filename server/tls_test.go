package server_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/dfsmr/dfsmr/client"
	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/tlsconf/tlstest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

// TestRenewedCertificateServedWithoutRestart renews the server's
// certificate in place: new connections get the new one.
func TestRenewedCertificateServedWithoutRestart(t *testing.T) {
	ca := tlstest.NewCA(t, "renew")
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := ca.Server(t, "dfsmrd")
	tlstest.Install(t, first, cert, key)
	env := mustServer(t, server.Config{TLSCert: cert, TLSKey: key})

	serial := func() string {
		t.Helper()
		opt, err := client.WithTLS(client.TLSFiles{CA: ca.CertFile})
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.Dial(env.srv.Addr(), opt)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var p peer.Peer
		if _, err := healthpb.NewHealthClient(c.Conn()).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
			t.Fatal(err)
		}
		return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber.Text(16)
	}
	if got, want := serial(), first.Cert.SerialNumber.Text(16); got != want {
		t.Fatalf("serial %s, want %s", got, want)
	}
	second := ca.Server(t, "dfsmrd")
	tlstest.Install(t, second, cert, key)
	if got, want := serial(), second.Cert.SerialNumber.Text(16); got != want {
		t.Fatalf("after the renewal: serial %s, want the new %s", got, want)
	}
}
