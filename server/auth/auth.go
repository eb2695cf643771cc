// Package auth authenticates dfsmr callers and authorizes their calls.
//
// A caller proves who it is with a bearer token (the "authorization:
// Bearer ..." header) or, under mutual TLS, with the client certificate of
// its own TLS handshake. Nothing else identifies a caller: no header a
// proxy could forward names one.
//
// The tokens file lists the principals, their roles and their credentials.
// Tokens are stored as SHA-256 hashes, so the file yields no usable token:
//
//	principals:
//	  - name: alice
//	    roles: [admin]
//	    token_sha256: 4f1c...e9      # HashToken of her token
//	  - name: crawler-pool
//	    roles: [worker]
//	    machines: [crawler]          # optional: work only on these machines
//	    token_sha256: 0b7e...11
//	  - name: printer-7
//	    roles: [device]
//	    cert: printer-7.farm.example # client certificate CN, DNS or URI SAN
//
// Each RPC needs one role (see MethodRole); a principal holding a role that
// grants it may call it, everyone else gets PERMISSION_DENIED. The file is
// reloaded by Reload and, at most once per Options.CheckEvery, when it
// changes: a revoked token stops working on the next call after that.
package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// DefaultCheckEvery is how often, at most, a call checks whether the
// tokens file changed.
const DefaultCheckEvery = time.Second

// TokenPrefix starts every token NewToken makes, so that a leaked token
// is recognisable in logs and by secret scanners.
const TokenPrefix = "dfsmr_"

// NewToken returns a new random token: TokenPrefix and 256 random bits.
func NewToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails; see crypto/rand.Read
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// HashToken returns the hex SHA-256 of a token: the form a tokens file
// stores. A fast hash is enough because tokens are long random strings,
// not passwords.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// File is the tokens file.
type File struct {
	// Principals are the callers the server knows.
	Principals []Entry `yaml:"principals"`
}

// Entry is one principal of the tokens file.
type Entry struct {
	// Name names the principal in logs and the changelog; a device
	// principal's name is its device id.
	Name string `yaml:"name"`
	// Roles are the roles it holds.
	Roles []Role `yaml:"roles"`
	// Machines, when set, restricts its worker role to these machines.
	Machines []string `yaml:"machines,omitempty"`
	// TokenSHA256 is the hex SHA-256 of its bearer token (HashToken).
	TokenSHA256 string `yaml:"token_sha256,omitempty"`
	// Cert is the common name, DNS name or URI of its client certificate.
	Cert string `yaml:"cert,omitempty"`
}

// table is one loaded tokens file, looked up on every call.
type table struct {
	tokens map[[sha256.Size]byte]*Principal
	certs  map[string]*Principal
}

// Parse reads and checks a tokens file.
func Parse(data []byte) (*File, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if _, err := f.table(); err != nil {
		return nil, err
	}
	return &f, nil
}

func (f *File) table() (*table, error) {
	t := &table{tokens: map[[sha256.Size]byte]*Principal{}, certs: map[string]*Principal{}}
	names := map[string]bool{}
	for i, e := range f.Principals {
		where := fmt.Sprintf("principals[%d]", i)
		if e.Name == "" {
			return nil, fmt.Errorf("%s: name is empty", where)
		}
		where = fmt.Sprintf("principal %q", e.Name)
		if names[e.Name] {
			return nil, fmt.Errorf("%s: listed twice", where)
		}
		names[e.Name] = true
		if len(e.Roles) == 0 {
			return nil, fmt.Errorf("%s: no roles", where)
		}
		for _, r := range e.Roles {
			if !r.valid() {
				return nil, fmt.Errorf("%s: unknown role %q (roles: %v)", where, r, Roles)
			}
		}
		if e.TokenSHA256 == "" && e.Cert == "" {
			return nil, fmt.Errorf("%s: neither token_sha256 nor cert is set", where)
		}
		p := &Principal{Name: e.Name, Roles: e.Roles, Machines: e.Machines}
		if e.TokenSHA256 != "" {
			var h [sha256.Size]byte
			if n, err := hex.Decode(h[:], []byte(e.TokenSHA256)); err != nil || n != sha256.Size || len(e.TokenSHA256) != 2*sha256.Size {
				return nil, fmt.Errorf("%s: token_sha256 is not 64 hex digits (make it with 'dfsmr token hash')", where)
			}
			if _, dup := t.tokens[h]; dup {
				return nil, fmt.Errorf("%s: token_sha256 is another principal's too", where)
			}
			tp := *p
			tp.Via = ViaToken
			t.tokens[h] = &tp
		}
		if e.Cert != "" {
			if _, dup := t.certs[e.Cert]; dup {
				return nil, fmt.Errorf("%s: cert %q is another principal's too", where, e.Cert)
			}
			cp := *p
			cp.Via = ViaCertificate
			t.certs[e.Cert] = &cp
		}
	}
	return t, nil
}

// Options configure an Authenticator.
type Options struct {
	// Now is the time source of the change checks; default time.Now.
	Now func() time.Time
	// CheckEvery is how often, at most, a call checks whether the file
	// changed; default DefaultCheckEvery, negative never.
	CheckEvery time.Duration
	// Logger receives reload logs; default slog.Default().
	Logger *slog.Logger
}

// Authenticator authenticates callers against a tokens file.
type Authenticator struct {
	path  string
	opts  Options
	log   *slog.Logger
	table atomic.Pointer[table]
	next  atomic.Int64 // unix nanos of the next change check

	mu     sync.Mutex // serializes loads
	stat   os.FileInfo
	failed os.FileInfo
}

// Load reads the tokens file at path.
func Load(path string, opts Options) (*Authenticator, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CheckEvery == 0 {
		opts.CheckEvery = DefaultCheckEvery
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &Authenticator{path: path, opts: opts, log: opts.Logger.With("component", "auth")}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Reload re-reads the tokens file. When it does not load, the previous
// principals stay in force and the error says why.
func (a *Authenticator) Reload() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	fi, err := os.Stat(a.path)
	if err != nil {
		return fmt.Errorf("tokens file: %w", err)
	}
	return a.loadLocked(fi)
}

func (a *Authenticator) loadLocked(fi os.FileInfo) error {
	data, err := os.ReadFile(a.path)
	if err != nil {
		return fmt.Errorf("tokens file: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		a.failed = fi
		return fmt.Errorf("tokens file %s: %w", a.path, err)
	}
	t, _ := f.table()
	a.table.Store(t)
	a.stat, a.failed = fi, nil
	a.log.Info("tokens file loaded", "file", a.path, "principals", len(f.Principals))
	return nil
}

// checkChanged reloads the file when it changed since it was loaded, at
// most once per CheckEvery; only one caller does the check.
func (a *Authenticator) checkChanged() {
	if a.opts.CheckEvery < 0 {
		return
	}
	now := a.opts.Now().UnixNano()
	next := a.next.Load()
	if now < next || !a.next.CompareAndSwap(next, now+int64(a.opts.CheckEvery)) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	fi, err := os.Stat(a.path)
	if err != nil || sameFile(fi, a.stat) || sameFile(fi, a.failed) {
		return
	}
	if err := a.loadLocked(fi); err != nil {
		a.log.Error("tokens file changed but does not load; keeping the previous principals", "err", err)
	}
}

func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// Authenticate returns the principal of a call: the one of its bearer
// token when it sends one, else the one of its verified client
// certificate. The error is an UNAUTHENTICATED status.
func (a *Authenticator) Authenticate(ctx context.Context) (*Principal, error) {
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("authorization")) > 0 {
		tok, err := grpcauth.AuthFromMD(ctx, "bearer")
		if err != nil {
			return nil, err
		}
		return a.Token(tok)
	}
	a.checkChanged()
	t := a.table.Load()
	cert := verifiedCert(ctx)
	if cert == nil {
		return nil, status.Error(codes.Unauthenticated, "no credentials: send a bearer token (authorization: Bearer <token>) or a client certificate")
	}
	for _, name := range certNames(cert) {
		if p, ok := t.certs[name]; ok {
			return p, nil
		}
	}
	return nil, status.Errorf(codes.Unauthenticated, "client certificate %q is not in the tokens file", cert.Subject.CommonName)
}

// Token returns the principal of a bearer token: the gRPC calls' and the
// dashboard's one lookup.
func (a *Authenticator) Token(tok string) (*Principal, error) {
	a.checkChanged()
	if p, ok := a.table.Load().tokens[sha256.Sum256([]byte(tok))]; ok {
		return p, nil
	}
	return nil, status.Error(codes.Unauthenticated, "unknown or revoked bearer token")
}

// Authorize is a grpc-middleware auth.AuthFunc: it authenticates the call,
// checks that the principal holds the role the RPC needs, and returns the
// context carrying the principal (see FromContext).
func (a *Authenticator) Authorize(ctx context.Context) (context.Context, error) {
	method, _ := grpc.Method(ctx)
	p, err := a.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	role, ok := MethodRole(method)
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not in the role map: denied to everyone", method)
	}
	if !p.Has(role) {
		return nil, status.Errorf(codes.PermissionDenied, "%s (roles %v) may not call %s: it needs the %s role", p.Name, p.Roles, method, role)
	}
	return NewContext(ctx, p), nil
}

// verifiedCert returns the leaf client certificate of the call's TLS
// handshake when the server verified it against its client CAs.
func verifiedCert(ctx context.Context) *x509.Certificate {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}

// certNames lists the names a certificate may be known by, in the order
// they are matched: common name, DNS names, URIs.
func certNames(c *x509.Certificate) []string {
	var names []string
	if c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	names = append(names, c.DNSNames...)
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	return names
}
