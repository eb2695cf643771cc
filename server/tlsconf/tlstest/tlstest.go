// Package tlstest makes throwaway certificate authorities and certificates
// for tests: real X.509 and real PEM files in a test's temporary directory.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority that issues test certificates.
type CA struct {
	// CertFile is the PEM file of the CA certificate.
	CertFile string

	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

// Pair names the PEM files of an issued certificate and its key.
type Pair struct {
	CertFile, KeyFile string
	// Cert is the issued certificate.
	Cert *x509.Certificate
}

// NewCA makes a CA named name with its files in a new temporary directory.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	key := mustKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	ca := &CA{CertFile: filepath.Join(dir, name+"-ca.pem"), cert: cert, key: key, dir: dir}
	writePEM(tb, ca.CertFile, "CERTIFICATE", der)
	return ca
}

// Server issues a server certificate for localhost and 127.0.0.1, with
// common name cn, into files named after cn.
func (ca *CA) Server(tb testing.TB, cn string) Pair {
	tb.Helper()
	return ca.issue(tb, cn, x509.ExtKeyUsageServerAuth, func(t *x509.Certificate) {
		t.DNSNames = []string{"localhost"}
		t.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	})
}

// Client issues a client certificate with common name cn and the given
// DNS names, into files named after cn.
func (ca *CA) Client(tb testing.TB, cn string, dnsNames ...string) Pair {
	tb.Helper()
	return ca.issue(tb, cn, x509.ExtKeyUsageClientAuth, func(t *x509.Certificate) { t.DNSNames = dnsNames })
}

func (ca *CA) issue(tb testing.TB, cn string, usage x509.ExtKeyUsage, edit func(*x509.Certificate)) Pair {
	tb.Helper()
	key := mustKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber: serial(tb),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	p := Pair{
		CertFile: filepath.Join(ca.dir, cn+"-"+cert.SerialNumber.Text(16)+".pem"),
		KeyFile:  filepath.Join(ca.dir, cn+"-"+cert.SerialNumber.Text(16)+"-key.pem"),
		Cert:     cert,
	}
	writePEM(tb, p.CertFile, "CERTIFICATE", der)
	writePEM(tb, p.KeyFile, "PRIVATE KEY", keyDER)
	return p
}

// Install copies p's files to cert and key by atomic renames, as a
// certificate manager does when it renews a certificate in place.
func Install(tb testing.TB, p Pair, cert, key string) {
	tb.Helper()
	for _, f := range [][2]string{{p.KeyFile, key}, {p.CertFile, cert}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			tb.Fatal(err)
		}
		tmp := f[1] + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := os.Rename(tmp, f[1]); err != nil {
			tb.Fatal(err)
		}
	}
}

func mustKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

func serial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func writePEM(tb testing.TB, file, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}
