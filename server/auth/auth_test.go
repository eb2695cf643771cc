package auth_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestHashToken(t *testing.T) {
	a, b := auth.NewToken(), auth.NewToken()
	if a == b || !strings.HasPrefix(a, auth.TokenPrefix) || len(a) < len(auth.TokenPrefix)+43 {
		t.Fatalf("NewToken: %q, %q", a, b)
	}
	// The SHA-256 of "abc", from FIPS 180-2.
	if got := auth.HashToken("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("HashToken(abc) = %s", got)
	}
}

func TestParseRejects(t *testing.T) {
	h := auth.HashToken("t")
	for name, tc := range map[string]struct{ yaml, want string }{
		"no name":       {"principals: [{roles: [admin], token_sha256: " + h + "}]", "name is empty"},
		"twice":         {"principals: [{name: a, roles: [admin], token_sha256: " + h + "}, {name: a, roles: [reader], cert: x}]", "listed twice"},
		"no roles":      {"principals: [{name: a, token_sha256: " + h + "}]", "no roles"},
		"unknown role":  {"principals: [{name: a, roles: [root], token_sha256: " + h + "}]", `unknown role "root"`},
		"no credential": {"principals: [{name: a, roles: [admin]}]", "neither token_sha256 nor cert"},
		"plain token":   {"principals: [{name: a, roles: [admin], token_sha256: hunter2}]", "not 64 hex digits"},
		"shared token":  {"principals: [{name: a, roles: [admin], token_sha256: " + h + "}, {name: b, roles: [reader], token_sha256: " + h + "}]", "another principal's"},
		"shared cert":   {"principals: [{name: a, roles: [admin], cert: x}, {name: b, roles: [reader], cert: x}]", `cert "x" is another principal's`},
		"unknown field": {"principals: [{name: a, roles: [admin], token: abc}]", "field token not found"},
	} {
		_, err := auth.Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
}

func TestRoleGrants(t *testing.T) {
	for _, r := range auth.Roles {
		if !auth.RoleAdmin.Grants(r) {
			t.Errorf("admin does not grant %s", r)
		}
		if !r.Grants(r) {
			t.Errorf("%s does not grant itself", r)
		}
	}
	if !auth.RoleOperator.Grants(auth.RoleReader) || auth.RoleOperator.Grants(auth.RoleWorker) || auth.RoleReader.Grants(auth.RoleOperator) {
		t.Error("operator must grant reader only")
	}
	for _, r := range []auth.Role{auth.RoleWorker, auth.RoleDevice, auth.RoleReader} {
		for _, o := range auth.Roles {
			if o != r && r.Grants(o) {
				t.Errorf("%s grants %s", r, o)
			}
		}
	}
}

// fakeNow is a settable time source for the change checks.
type fakeNow struct{ t time.Time }

func (f *fakeNow) now() time.Time { return f.t }

func writeTokens(t *testing.T, path string, entries ...string) {
	t.Helper()
	// Write to a new file and rename, as an operator's tooling would, so
	// that the change is visible whatever the file system's time
	// resolution.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte("principals:\n"+strings.Join(entries, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func entry(name, role, token string) string {
	return fmt.Sprintf("  - {name: %s, roles: [%s], token_sha256: %s}", name, role, auth.HashToken(token))
}

func bearer(token string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("err = %v, want %s", err, code)
	}
}

func TestChangedFileReloadsAfterCheckEvery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	writeTokens(t, path, entry("alice", "admin", "tok-a"), entry("bob", "reader", "tok-b"))
	clock := &fakeNow{t: time.Unix(1_000_000, 0)}
	a, err := auth.Load(path, auth.Options{Now: clock.now, CheckEvery: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate(bearer("tok-b"))
	if err != nil || p.Name != "bob" || p.Via != auth.ViaToken {
		t.Fatalf("bob: %+v %v", p, err)
	}

	writeTokens(t, path, entry("alice", "admin", "tok-a"))
	// Within CheckEvery of the last check the file is not looked at.
	if _, err := a.Authenticate(bearer("tok-b")); err != nil {
		t.Fatalf("before the check: %v", err)
	}
	clock.t = clock.t.Add(time.Second)
	_, err = a.Authenticate(bearer("tok-b"))
	wantCode(t, err, codes.Unauthenticated)
	if p, err := a.Authenticate(bearer("tok-a")); err != nil || p.Name != "alice" {
		t.Fatalf("alice after the reload: %+v %v", p, err)
	}

	// A broken file keeps the principals in force.
	if err := os.WriteFile(path, []byte("principals: [{name: x}"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock.t = clock.t.Add(time.Second)
	if p, err := a.Authenticate(bearer("tok-a")); err != nil || p.Name != "alice" {
		t.Fatalf("alice after a broken write: %+v %v", p, err)
	}
	if err := a.Reload(); err == nil {
		t.Fatal("Reload of a broken file: no error")
	}
}

func TestAuthenticateWithoutCredentials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	writeTokens(t, path, entry("alice", "admin", "tok-a"))
	a, err := auth.Load(path, auth.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Authenticate(context.Background())
	wantCode(t, err, codes.Unauthenticated)
	_, err = a.Authenticate(metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Basic YWxpY2U6eA==")))
	wantCode(t, err, codes.Unauthenticated)
	// A header naming a principal is no credential.
	_, err = a.Authenticate(metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-forwarded-client-cert", "CN=alice", "x-dfsmr-principal", "alice")))
	wantCode(t, err, codes.Unauthenticated)
}

func TestCheckDeviceAndMachine(t *testing.T) {
	printer := auth.NewContext(context.Background(), &auth.Principal{Name: "printer-7", Roles: []auth.Role{auth.RoleDevice}})
	if err := auth.CheckDevice(printer, "printer-7"); err != nil {
		t.Fatalf("own id: %v", err)
	}
	wantCode(t, auth.CheckDevice(printer, "printer-8"), codes.PermissionDenied)
	reader := auth.NewContext(context.Background(), &auth.Principal{Name: "printer-8", Roles: []auth.Role{auth.RoleReader}})
	wantCode(t, auth.CheckDevice(reader, "printer-8"), codes.PermissionDenied)
	admin := auth.NewContext(context.Background(), &auth.Principal{Name: "root", Roles: []auth.Role{auth.RoleAdmin}})
	if err := auth.CheckDevice(admin, "printer-8"); err != nil {
		t.Fatalf("admin: %v", err)
	}
	if err := auth.CheckDevice(context.Background(), "printer-8"); err != nil {
		t.Fatalf("without auth: %v", err)
	}

	crawler := auth.NewContext(context.Background(), &auth.Principal{Name: "pool", Roles: []auth.Role{auth.RoleWorker}, Machines: []string{"crawler"}})
	if err := auth.CheckMachine(crawler, "crawler"); err != nil {
		t.Fatalf("listed machine: %v", err)
	}
	wantCode(t, auth.CheckMachine(crawler, "report"), codes.PermissionDenied)
	wantCode(t, auth.CheckMachine(crawler, ""), codes.PermissionDenied)
	any := auth.NewContext(context.Background(), &auth.Principal{Name: "w", Roles: []auth.Role{auth.RoleWorker}})
	if err := auth.CheckMachine(any, "report"); err != nil {
		t.Fatalf("unrestricted worker: %v", err)
	}
}
