package auth

import (
	"context"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// How a principal proved who it is.
const (
	ViaToken       = "token"
	ViaCertificate = "certificate"
)

// Principal is an authenticated caller.
type Principal struct {
	// Name is the principal's name in the tokens file. It is the actor of
	// the changes it makes, and a device principal's device id.
	Name string
	// Roles are the roles it holds.
	Roles []Role
	// Machines, when not empty, restricts its worker role to these machines.
	Machines []string
	// Via is how it authenticated: ViaToken or ViaCertificate.
	Via string
}

// Has reports whether one of p's roles grants want.
func (p *Principal) Has(want Role) bool {
	return slices.ContainsFunc(p.Roles, func(r Role) bool { return r.Grants(want) })
}

// Restricted reports whether p works only on listed machines.
func (p *Principal) Restricted() bool { return len(p.Machines) > 0 && !p.Has(RoleAdmin) }

type principalKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal of a call, and false when the server
// runs without authentication.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// CheckDevice returns nil when the caller may connect as device id: a
// device principal only as the device named like itself, an admin as any
// device. Without authentication everyone may. Otherwise the error is a
// PERMISSION_DENIED status.
func CheckDevice(ctx context.Context, id string) error {
	p, ok := FromContext(ctx)
	if !ok || p.Has(RoleAdmin) || (p.Has(RoleDevice) && p.Name == id) {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "%s may not connect as device %q: a device connects only under its own name", p.Name, id)
}

// CheckMachine returns nil when the caller may work on instances of
// machine: a worker restricted to listed machines only on those, an admin
// or an unrestricted worker on any. Without authentication everyone may.
// Otherwise the error is a PERMISSION_DENIED status.
func CheckMachine(ctx context.Context, machine string) error {
	p, ok := FromContext(ctx)
	if !ok || !p.Restricted() || slices.Contains(p.Machines, machine) {
		return nil
	}
	if machine == "" {
		return status.Errorf(codes.PermissionDenied, "%s works only on machines %v: name one", p.Name, p.Machines)
	}
	return status.Errorf(codes.PermissionDenied, "%s may not work on machine %q: it works only on %v", p.Name, machine, p.Machines)
}
