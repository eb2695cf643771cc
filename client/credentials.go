package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
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
