package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// WithToken sends token as a bearer token ("authorization: Bearer
// <token>") on every call. gRPC refuses to send it over a connection
// without TLS, where anyone on the path could read it.
func WithToken(token string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(bearerToken(token))
}

type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return true }

// WithLoopbackToken returns the dial options that send token as a bearer
// token over a connection without TLS to a server on this machine: the
// token travels in clear, so it may go only to a loopback address. The
// dialer they install resolves the address and connects only when every
// address the name resolves to is a loopback one (127.0.0.0/8, ::1), and
// checks the connected peer again; anything else fails to connect, before
// a byte of the token is sent. With TLS, use WithToken.
func WithLoopbackToken(token string) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithPerRPCCredentials(loopbackToken(token)),
		grpc.WithContextDialer(dialLoopback),
	}
}

// ErrNotLoopback is the error of a connection that WithLoopbackToken
// refused because its address is not a loopback one.
var ErrNotLoopback = errors.New("a bearer token without TLS goes only to a loopback address")

type loopbackToken string

func (t loopbackToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false: dialLoopback is the guard instead.
func (loopbackToken) RequireTransportSecurity() bool { return false }

// dialLoopback connects to addr over TCP if it is on this machine.
func dialLoopback(ctx context.Context, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("%s: no address", host)
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return nil, fmt.Errorf("%s (%s): %w", addr, ip.IP, ErrNotLoopback)
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ips[0].IP.String(), port))
	if err != nil {
		return nil, err
	}
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		conn.Close()
		return nil, fmt.Errorf("%s (%s): %w", addr, conn.RemoteAddr(), ErrNotLoopback)
	}
	return conn, nil
}

// TLSFiles names the PEM files of a client's TLS configuration.
type TLSFiles struct {
	// CA is a bundle of the CAs that may sign the server's certificate;
	// empty: the system's roots.
	CA string
	// Cert and Key, when set, are the client certificate and its key that
	// the client presents (mutual TLS).
	Cert, Key string
}

// TLSConfig loads f into a client TLS configuration.
func TLSConfig(f TLSFiles) (*tls.Config, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("tls: set both the client certificate and its key")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: %s holds no PEM certificate", f.CA)
		}
	}
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// WithTLS returns the dial option of TLS with f, to pass to Dial after its
// insecure default.
func WithTLS(f TLSFiles) (grpc.DialOption, error) {
	cfg, err := TLSConfig(f)
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}
