package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/server/auth"
	"github.com/dfsmr/dfsmr/server/changes"
	"github.com/dfsmr/dfsmr/server/engine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultSessionTTL is how long a browser stays logged in.
const DefaultSessionTTL = 12 * time.Hour

// Cookie and form names.
const (
	sessionCookie = "dfsmr_session"
	csrfField     = "csrf"
	// anonPrefix starts the session cookie of a server without
	// authentication: a random id, only there to bind the CSRF token.
	anonPrefix = "anon."
)

// Log attribute keys.
const (
	logKeyComponent  = "component"
	logKeyErr        = "err"
	logKeyPath       = "path"
	logKeyRemote     = "remote"
	logKeyAction     = "action"
	logKeyPrincipal  = "principal"
	logKeyCount      = "count"
	logKeyResumeFrom = "resume_from"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Options configure a Handler.
type Options struct {
	// Engine runs the actions and answers the reads. Required.
	Engine *engine.Engine
	// Hub is the changelog the live views and /events read. Required.
	Hub *changes.Hub
	// Auth checks the tokens browsers log in with; nil: no
	// authentication, every visitor may do everything (the server allows
	// that on loopback only).
	Auth *auth.Authenticator
	// ReadOnly refuses every action, whatever the role.
	ReadOnly bool
	// Prefix is the path the dashboard is served under behind a reverse
	// proxy ("/dfsmr"), without a trailing slash; empty: the root.
	Prefix string
	// Secure marks the session cookie Secure: set it when serving TLS.
	Secure bool
	// SessionTTL is how long a login lasts; default DefaultSessionTTL.
	SessionTTL time.Duration
	// Status maps an error of the engine to its gRPC status, the one
	// mapping the server has (server/errors.go); the handler turns its
	// code into an HTTP status. Required.
	Status func(error) *status.Status
	// Clock is the time source; default the wall clock.
	Clock clock.Clock
	// Logger receives the dashboard's logs; default slog.Default().
	Logger *slog.Logger
}

// Handler serves the dashboard. Close ends its event streams.
type Handler struct {
	o     Options
	log   *slog.Logger
	mux   *http.ServeMux
	pages map[string]*template.Template

	// closed ends when Close is called, and with it every event stream.
	closed  context.Context
	close   context.CancelFunc
	streams sync.WaitGroup
}

// New builds the dashboard's handler.
func New(o Options) (*Handler, error) {
	if o.Engine == nil || o.Hub == nil || o.Status == nil {
		return nil, errors.New("web: Engine, Hub and Status are required")
	}
	if o.Prefix != "" && (!strings.HasPrefix(o.Prefix, "/") || strings.HasSuffix(o.Prefix, "/")) {
		return nil, errors.New("web: the path prefix must start with / and not end with one")
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	h := &Handler{o: o, log: o.Logger.With(logKeyComponent, "web")}
	h.closed, h.close = context.WithCancel(context.Background())
	if err := h.parseTemplates(); err != nil {
		return nil, err
	}
	assets, _ := fs.Sub(assetFS, "assets")
	m := http.NewServeMux()
	m.Handle("GET /assets/", http.StripPrefix("/assets/", assetServer(http.FileServerFS(assets))))
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, h.url("/printers"), http.StatusSeeOther)
	})
	m.HandleFunc("GET /login", h.loginPage)
	m.HandleFunc("POST /login", h.login)
	m.HandleFunc("POST /logout", h.logout)
	m.HandleFunc("GET /machines", h.view(pb.MachineService_ListMachines_FullMethodName, h.machinesPage))
	m.HandleFunc("GET /machines/{id}", h.view(pb.MachineService_GetMachine_FullMethodName, h.machinePage))
	m.HandleFunc("GET /instances", h.view(pb.InstanceService_ListInstances_FullMethodName, h.instancesPage))
	m.HandleFunc("GET /instances/{id}", h.view(pb.InstanceService_GetInstance_FullMethodName, h.instancePage))
	m.HandleFunc("GET /changes", h.view(pb.ChangesService_Changes_FullMethodName, h.changesPage))
	m.HandleFunc("GET /leases", h.view(pb.InstanceService_ListInstances_FullMethodName, h.leasesPage))
	m.HandleFunc("GET /printers", h.view(pb.DeviceService_ListDevices_FullMethodName, h.printersPage))
	m.HandleFunc("GET /confirm", h.view(pb.InstanceService_GetInstance_FullMethodName, h.confirmPage))
	m.HandleFunc("GET /events", h.view(pb.ChangesService_Changes_FullMethodName, h.events))
	m.HandleFunc("POST /act", h.act)
	h.mux = m
	return h, nil
}

// assetServer lets browsers cache the embedded assets for a while: they
// change only with the binary.
func assetServer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		next.ServeHTTP(w, r)
	})
}

// ServeHTTP serves the dashboard under Options.Prefix.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "same-origin")
	hdr.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
	if h.o.Prefix == "" {
		h.mux.ServeHTTP(w, r)
		return
	}
	if r.URL.Path == h.o.Prefix {
		http.Redirect(w, r, h.o.Prefix+"/", http.StatusSeeOther)
		return
	}
	http.StripPrefix(h.o.Prefix, h.mux).ServeHTTP(w, r)
}

// Close ends every open event stream; the server calls it before it shuts
// its HTTP listener down, as streams never end on their own. It waits for
// them to return. Close is idempotent.
func (h *Handler) Close() {
	h.close()
	h.streams.Wait()
}

// url returns the dashboard path p ("/machines") under the prefix.
func (h *Handler) url(p string) string { return h.o.Prefix + p }

// viewer is who is looking at a page.
type viewer struct {
	// p is the principal; nil without authentication.
	p *auth.Principal
	// name is the actor of the viewer's actions in the changelog.
	name string
	// csrf is the token every form of the viewer carries.
	csrf string
}

// may reports whether the viewer may call the RPC method (a full method
// name): the gRPC role map decides for both sides.
func (v *viewer) may(method string) bool {
	if v.p == nil {
		return true
	}
	role, ok := auth.MethodRole(method)
	return ok && v.p.Has(role)
}

// canAct reports whether the viewer may take the action that calls method.
func (h *Handler) canAct(v *viewer, method string) bool {
	return !h.o.ReadOnly && v.may(method)
}

// errNoSession is a request without a valid session.
var errNoSession = errors.New("not logged in")

// identify returns the viewer of r. Without authentication it gives a
// visitor without a session cookie a new one.
func (h *Handler) identify(w http.ResponseWriter, r *http.Request) (*viewer, error) {
	c, _ := r.Cookie(sessionCookie)
	if h.o.Auth == nil {
		if c == nil || !strings.HasPrefix(c.Value, anonPrefix) {
			c = &http.Cookie{Value: anonPrefix + randomID()}
			h.setSession(w, c.Value, h.sessionAge())
		}
		return &viewer{name: "web:" + r.RemoteAddr, csrf: csrfToken(c.Value)}, nil
	}
	if c == nil {
		return nil, errNoSession
	}
	tok, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil {
		return nil, errNoSession
	}
	p, err := h.o.Auth.Token(string(tok))
	if err != nil {
		return nil, errNoSession
	}
	return &viewer{p: p, name: p.Name, csrf: csrfToken(c.Value)}, nil
}

// setSession sets the session cookie; a maxAge of -1 removes it.
func (h *Handler) setSession(w http.ResponseWriter, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    value,
		Path:     h.url("/"),
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   h.o.Secure,
		SameSite: http.SameSiteStrictMode,
	})
}

// sessionAge is a new session cookie's max age, in seconds.
func (h *Handler) sessionAge() int { return int(h.o.SessionTTL / time.Second) }

// csrfToken binds a form token to a session cookie: only a page that could
// read the cookie's value (the server's own) can compute it.
func csrfToken(session string) string {
	m := hmac.New(sha256.New, []byte(session))
	m.Write([]byte("dfsmr web csrf"))
	return hex.EncodeToString(m.Sum(nil))
}

func randomID() string {
	b := make([]byte, 24)
	rand.Read(b) // never fails; see crypto/rand.Read
	return base64.RawURLEncoding.EncodeToString(b)
}

// view wraps a page: it identifies the viewer, sends one without a
// session to the login page, and refuses one whose roles do not allow
// method.
func (h *Handler) view(method string, page func(http.ResponseWriter, *http.Request, *viewer)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := h.identify(w, r)
		if err != nil {
			if r.Header.Get("Accept") == "text/event-stream" || r.Header.Get("X-Fragment") != "" {
				http.Error(w, "not logged in", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, h.url("/login")+"?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if !v.may(method) {
			h.fail(w, r, v, status.Errorf(codes.PermissionDenied, "%s (roles %v) may not see this page: it needs %s", v.name, v.p.Roles, method))
			return
		}
		// The head before the page reads anything: its live part follows
		// the changes after it, so none that the page missed is skipped.
		page(w, r.WithContext(context.WithValue(r.Context(), headKey{}, h.o.Hub.Head())), v)
	}
}

// headKey is the request context key of the changelog head read before a
// page.
type headKey struct{}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	if h.o.Auth == nil {
		http.Redirect(w, r, h.url("/"), http.StatusSeeOther)
		return
	}
	h.render(w, r, "login", &viewer{}, map[string]any{"Next": safeNext(r.URL.Query().Get("next")), "Error": ""}, http.StatusOK)
}

// login checks the posted token and starts a session. Login needs no CSRF
// token: it has no session yet, and a forged login only logs the browser in
// as the forger.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if h.o.Auth == nil {
		http.Redirect(w, r, h.url("/"), http.StatusSeeOther)
		return
	}
	tok := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	if _, err := h.o.Auth.Token(tok); tok == "" || err != nil {
		h.log.Info("web login refused", logKeyRemote, r.RemoteAddr)
		h.render(w, r, "login", &viewer{}, map[string]any{"Next": next, "Error": "Unknown or revoked token."}, http.StatusUnauthorized)
		return
	}
	h.setSession(w, base64.RawURLEncoding.EncodeToString([]byte(tok)), h.sessionAge())
	if next == "" {
		next = h.url("/")
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	v, err := h.identify(w, r)
	if err == nil && !hmac.Equal([]byte(r.PostFormValue(csrfField)), []byte(v.csrf)) {
		http.Error(w, "missing or wrong CSRF token", http.StatusForbidden)
		return
	}
	h.setSession(w, "", -1)
	http.Redirect(w, r, h.url("/login"), http.StatusSeeOther)
}

// safeNext keeps a redirect target only when it is a path of this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return ""
	}
	return next
}

// httpCode maps a gRPC code to the HTTP status a page answers with.
func httpCode(c codes.Code) int {
	switch c {
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted, codes.FailedPrecondition:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable, codes.Canceled:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// fail renders an error page for err, with the status the server's error
// mapping gives it.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, v *viewer, err error) {
	st, ok := status.FromError(err)
	if !ok {
		st = h.o.Status(err)
	}
	code := httpCode(st.Code())
	if code == http.StatusInternalServerError {
		h.log.Error("web request failed", logKeyPath, r.URL.Path, logKeyErr, err)
	}
	h.render(w, r, "error", v, map[string]any{"Code": code, "GRPCCode": st.Code().String(), "Message": st.Message()}, code)
}

// Name is the viewer's name, for the templates.
func (v *viewer) Name() string { return v.name }

// CSRF is the token the viewer's forms carry, for the templates.
func (v *viewer) CSRF() string { return v.csrf }
