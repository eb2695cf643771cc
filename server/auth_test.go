package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/auth"
	"github.com/dfsmr/dfsmr/server/tlsconf/tlstest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// wantRoles is who may call each RPC, written out here independently of
// the server's role map so that a change to either is a visible decision.
// An RPC the server registers and this table lacks fails the walk.
var wantRoles = map[string][]auth.Role{
	"/dfsmr.v1.MachineService/DefineMachine": {auth.RoleAdmin},
	"/dfsmr.v1.MachineService/GetMachine":    {auth.RoleAdmin, auth.RoleOperator, auth.RoleReader},
	"/dfsmr.v1.MachineService/ListMachines":  {auth.RoleAdmin, auth.RoleOperator, auth.RoleReader},

	"/dfsmr.v1.InstanceService/StartInstance":   {auth.RoleAdmin, auth.RoleOperator},
	"/dfsmr.v1.InstanceService/GetInstance":     {auth.RoleAdmin, auth.RoleOperator, auth.RoleReader},
	"/dfsmr.v1.InstanceService/ListInstances":   {auth.RoleAdmin, auth.RoleOperator, auth.RoleReader},
	"/dfsmr.v1.InstanceService/SignalInstance":  {auth.RoleAdmin, auth.RoleOperator},
	"/dfsmr.v1.InstanceService/CancelInstance":  {auth.RoleAdmin, auth.RoleOperator},
	"/dfsmr.v1.InstanceService/RetryInstance":   {auth.RoleAdmin, auth.RoleOperator},
	"/dfsmr.v1.InstanceService/CancelInstances": {auth.RoleAdmin, auth.RoleOperator},
	"/dfsmr.v1.InstanceService/RetryInstances":  {auth.RoleAdmin, auth.RoleOperator},

	"/dfsmr.v1.WorkService/Ready":           {auth.RoleAdmin, auth.RoleWorker},
	"/dfsmr.v1.WorkService/Transition":      {auth.RoleAdmin, auth.RoleWorker},
	"/dfsmr.v1.WorkService/Heartbeat":       {auth.RoleAdmin, auth.RoleWorker},
	"/dfsmr.v1.WorkService/Relinquish":      {auth.RoleAdmin, auth.RoleWorker},
	"/dfsmr.v1.WorkService/TransitionBatch": {auth.RoleAdmin, auth.RoleWorker},

	"/dfsmr.v1.ChangesService/Changes": {auth.RoleAdmin, auth.RoleOperator, auth.RoleReader},

	"/dfsmr.v1.AdminService/Backup": {auth.RoleAdmin},

	"/dfsmr.v1.ClusterService/Status":             {auth.RoleAdmin},
	"/dfsmr.v1.ClusterService/Members":            {auth.RoleAdmin},
	"/dfsmr.v1.ClusterService/AddVoter":           {auth.RoleAdmin},
	"/dfsmr.v1.ClusterService/RemoveServer":       {auth.RoleAdmin},
	"/dfsmr.v1.ClusterService/TransferLeadership": {auth.RoleAdmin},

	"/dfsmr.v1.DeviceService/Connect":      {auth.RoleAdmin, auth.RoleDevice},
	"/dfsmr.v1.DeviceService/ListDevices":  {auth.RoleAdmin, auth.RoleOperator, auth.RoleReader},
	"/dfsmr.v1.DeviceService/SubmitOrder":  {auth.RoleAdmin, auth.RoleOperator},
	"/dfsmr.v1.DeviceService/SignalDevice": {auth.RoleAdmin, auth.RoleOperator},
	"/dfsmr.v1.DeviceService/ReprintJob":   {auth.RoleAdmin, auth.RoleOperator},
	"/dfsmr.v1.DeviceService/GetOrder":     {auth.RoleAdmin, auth.RoleOperator, auth.RoleReader},
}

// secure is a TLS server with a tokens file: one token principal per role,
// plus the certificate principals of mutual TLS.
type secure struct {
	srv    *server.Server
	ca     *tlstest.CA
	tokens string // the tokens file
	token  map[string]string
}

// principals of the tokens file: name, roles, and either a token (made
// here) or a certificate name.
var securePrincipals = []struct {
	name, roles, machines, cert string
}{
	{name: "root", roles: "admin"},
	{name: "ops", roles: "operator"},
	{name: "pool", roles: "worker"},
	{name: "pool-b", roles: "worker"},
	{name: "crawler-pool", roles: "worker", machines: "crawler"},
	{name: "printer-7", roles: "device"},
	{name: "viewer", roles: "reader"},
	{name: "cert-reader", roles: "reader", cert: "reader.dfsmr.test"},
	{name: "cert-ops", roles: "operator", cert: "ops-client"},
}

func writeTokensFile(t *testing.T, path string, token map[string]string, skip ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("principals:\n")
	for _, p := range securePrincipals {
		if slices.Contains(skip, p.name) {
			continue
		}
		fmt.Fprintf(&b, "  - name: %s\n    roles: [%s]\n", p.name, p.roles)
		if p.machines != "" {
			fmt.Fprintf(&b, "    machines: [%s]\n", p.machines)
		}
		if p.cert != "" {
			fmt.Fprintf(&b, "    cert: %s\n", p.cert)
		} else {
			fmt.Fprintf(&b, "    token_sha256: %s\n", auth.HashToken(token[p.name]))
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func mustSecure(t *testing.T, mtls bool, edit func(*server.Config)) *secure {
	t.Helper()
	s := &secure{ca: tlstest.NewCA(t, "dfsmr-test"), token: map[string]string{}}
	for _, p := range securePrincipals {
		s.token[p.name] = auth.NewToken()
	}
	s.tokens = filepath.Join(t.TempDir(), "tokens.yaml")
	writeTokensFile(t, s.tokens, s.token)
	pair := s.ca.Server(t, "dfsmrd")
	cfg := server.Config{TLSCert: pair.CertFile, TLSKey: pair.KeyFile, Tokens: s.tokens}
	if mtls {
		cfg.ClientCA = s.ca.CertFile
	}
	if edit != nil {
		edit(&cfg)
	}
	s.srv = mustServer(t, cfg).srv
	return s
}

// dial connects over TLS with the given token (none when empty) and client
// certificate (none when zero).
func (s *secure) dial(t *testing.T, token string, cert tlstest.Pair) *grpc.ClientConn {
	t.Helper()
	tlsOpt, err := client.WithTLS(client.TLSFiles{CA: s.ca.CertFile, Cert: cert.CertFile, Key: cert.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	opts := []grpc.DialOption{tlsOpt}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	c, err := client.Dial(s.srv.Addr(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.Conn()
}

// call invokes any RPC with an empty request and returns its status: the
// auth check comes before the request is looked at. A stream counts as
// admitted once the server sends its headers.
func call(conn *grpc.ClientConn, method string, info grpc.MethodInfo) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !info.IsClientStream && !info.IsServerStream {
		return conn.Invoke(ctx, method, &emptypb.Empty{}, &emptypb.Empty{})
	}
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: info.IsClientStream, ServerStreams: info.IsServerStream}, method)
	if err != nil {
		return err
	}
	if err := st.SendMsg(&emptypb.Empty{}); err != nil {
		return st.RecvMsg(&emptypb.Empty{})
	}
	st.CloseSend()
	md, err := st.Header()
	if err != nil {
		return err
	}
	if md != nil {
		return nil
	}
	return st.RecvMsg(&emptypb.Empty{})
}

// api lists every RPC the server registered, except the open services.
func api(t *testing.T, srv *server.Server) map[string]grpc.MethodInfo {
	t.Helper()
	out := map[string]grpc.MethodInfo{}
	for svc, info := range srv.ServiceInfo() {
		if auth.Open(svc) {
			continue
		}
		for _, m := range info.Methods {
			out["/"+svc+"/"+m.Name] = m
		}
	}
	if len(out) < 13 {
		t.Fatalf("the server registered only %d RPCs: %v", len(out), out)
	}
	return out
}

func TestEveryRPCNeedsTheRightRole(t *testing.T) {
	s := mustSecure(t, false, nil)
	methods := api(t, s.srv)
	names := make([]string, 0, len(methods))
	for m := range methods {
		names = append(names, m)
		if _, ok := auth.MethodRole(m); !ok {
			t.Errorf("%s is not in the server's role map: it is denied to everyone", m)
		}
		if _, ok := wantRoles[m]; !ok {
			t.Errorf("%s is not in this test's table: decide who may call it", m)
		}
	}
	sort.Strings(names)

	anon := s.dial(t, "", tlstest.Pair{})
	revoked := s.dial(t, auth.NewToken(), tlstest.Pair{})
	for _, m := range names {
		if code := status.Code(call(anon, m, methods[m])); code != codes.Unauthenticated {
			t.Errorf("%s without a token: %s, want Unauthenticated", m, code)
		}
		if code := status.Code(call(revoked, m, methods[m])); code != codes.Unauthenticated {
			t.Errorf("%s with an unknown token: %s, want Unauthenticated", m, code)
		}
	}

	for _, p := range securePrincipals {
		if p.cert != "" || p.machines != "" {
			continue // certificates and restricted workers: tested below
		}
		role := auth.Role(p.roles)
		conn := s.dial(t, s.token[p.name], tlstest.Pair{})
		for _, m := range names {
			code := status.Code(call(conn, m, methods[m]))
			switch allowed := slices.Contains(wantRoles[m], role); {
			case !allowed && code != codes.PermissionDenied:
				t.Errorf("%s as %s (%s): %s, want PermissionDenied", m, p.name, role, code)
			case allowed && (code == codes.PermissionDenied || code == codes.Unauthenticated):
				t.Errorf("%s as %s (%s): %s, want admitted", m, p.name, role, code)
			}
		}
	}
}

func TestHealthAndReflectionStayOpen(t *testing.T) {
	s := mustSecure(t, false, nil)
	anon := s.dial(t, "", tlstest.Pair{})
	ctx := context.Background()
	if h, err := healthpb.NewHealthClient(anon).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without a token: %v %v", h, err)
	}
	if err := listServices(anon); err != nil {
		t.Fatalf("reflection without a token: %v", err)
	}

	off := mustSecure(t, false, func(c *server.Config) { c.NoReflection = true })
	if code := status.Code(listServices(off.dial(t, off.token["root"], tlstest.Pair{}))); code != codes.Unimplemented {
		t.Fatalf("reflection turned off: %s, want Unimplemented", code)
	}
}

func listServices(conn *grpc.ClientConn) error {
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		return err
	}
	// A stream the server already ended fails Send with io.EOF; Recv
	// returns its status either way.
	_ = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	_, err = stream.Recv()
	stream.CloseSend()
	return err
}

func TestRevokedTokenStopsAfterReload(t *testing.T) {
	s := mustSecure(t, false, nil)
	machines := pb.NewMachineServiceClient(s.dial(t, s.token["viewer"], tlstest.Pair{}))
	ctx := context.Background()
	if _, err := machines.ListMachines(ctx, &pb.ListMachinesRequest{}); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}
	writeTokensFile(t, s.tokens, s.token, "viewer")
	if err := s.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	_, err := machines.ListMachines(ctx, &pb.ListMachinesRequest{})
	wantCode(t, err, codes.Unauthenticated)

	// A broken file does not lock everyone out.
	if err := os.WriteFile(s.tokens, []byte("principals: ["), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.srv.Reload(); err == nil {
		t.Fatal("Reload of a broken tokens file: no error")
	}
	admin := pb.NewMachineServiceClient(s.dial(t, s.token["root"], tlstest.Pair{}))
	if _, err := admin.ListMachines(ctx, &pb.ListMachinesRequest{}); err != nil {
		t.Fatalf("after a broken reload: %v", err)
	}
}

func TestWorkerRestrictedToItsMachines(t *testing.T) {
	s := mustSecure(t, false, nil)
	ctx := context.Background()
	ops := pb.NewInstanceServiceClient(s.dial(t, s.token["ops"], tlstest.Pair{}))
	for _, m := range []string{"crawler", "report"} {
		if _, err := ops.StartInstance(ctx, &pb.StartInstanceRequest{Id: m + "-1", Machine: m}); err != nil {
			t.Fatal(err)
		}
	}
	pool := pb.NewWorkServiceClient(s.dial(t, s.token["pool"], tlstest.Pair{}))
	lease, err := pool.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "report"})
	if err != nil || lease.GetLease() == nil {
		t.Fatalf("unrestricted worker on report: %v %v", lease, err)
	}

	restricted := pb.NewWorkServiceClient(s.dial(t, s.token["crawler-pool"], tlstest.Pair{}))
	_, err = restricted.Ready(ctx, &pb.ReadyRequest{Worker: "c", Machine: "report"})
	wantCode(t, err, codes.PermissionDenied)
	_, err = restricted.Ready(ctx, &pb.ReadyRequest{Worker: "c"})
	wantCode(t, err, codes.PermissionDenied)
	// Holding another machine's lease token is no way around it, and the
	// answer is the one for a missing id: the worker does not learn which
	// ids exist on other machines.
	missing := func(t *testing.T, err error) {
		t.Helper()
		st := wantCode(t, err, codes.NotFound)
		_, gone := restricted.Heartbeat(ctx, &pb.HeartbeatRequest{Id: "report-9", Token: 1})
		if want := strings.ReplaceAll(status.Convert(gone).Message(), "report-9", "report-1"); st.Message() != want {
			t.Fatalf("message %q, want %q as for a missing id", st.Message(), want)
		}
	}
	_, err = restricted.Heartbeat(ctx, &pb.HeartbeatRequest{Id: "report-1", Token: lease.GetLease().GetToken()})
	missing(t, err)
	_, err = restricted.Transition(ctx, &pb.TransitionRequest{Id: "report-1", Token: lease.GetLease().GetToken(), Transition: "ok"})
	missing(t, err)
	_, err = restricted.Relinquish(ctx, &pb.RelinquishRequest{Id: "report-1", Token: lease.GetLease().GetToken()})
	missing(t, err)

	batch, err := restricted.TransitionBatch(ctx, &pb.TransitionBatchRequest{Transitions: []*pb.TransitionRequest{
		{Id: "report-1", Token: lease.GetLease().GetToken(), Transition: "ok"},
	}})
	if err != nil || len(batch.GetResults()) != 1 || codes.Code(batch.GetResults()[0].GetCode()) != codes.NotFound {
		t.Fatalf("restricted batch on report: %v %v; want its item NOT_FOUND", batch, err)
	}
	_, err = restricted.TransitionBatch(ctx, &pb.TransitionBatchRequest{Worker: "c", ContinueNodes: []string{"report/uploadable"},
		Transitions: []*pb.TransitionRequest{{Id: "crawler-1", Token: 1, Transition: "ok"}}})
	wantCode(t, err, codes.PermissionDenied)

	mine, err := restricted.Ready(ctx, &pb.ReadyRequest{Worker: "c", Machine: "crawler"})
	if err != nil || mine.GetLease() == nil {
		t.Fatalf("restricted worker on its machine: %v %v", mine, err)
	}
	if _, err := restricted.Relinquish(ctx, &pb.RelinquishRequest{Id: "crawler-1", Token: mine.GetLease().GetToken()}); err != nil {
		t.Fatalf("relinquish its own lease: %v", err)
	}
}

func TestMutualTLSIdentityFromCertificate(t *testing.T) {
	s := mustSecure(t, true, nil)
	ctx := context.Background()

	// No client certificate: the handshake fails.
	noCert := s.dial(t, s.token["root"], tlstest.Pair{})
	_, err := pb.NewMachineServiceClient(noCert).ListMachines(ctx, &pb.ListMachinesRequest{})
	wantCode(t, err, codes.Unavailable)

	// A certificate of another CA fails the handshake too.
	foreign := tlstest.NewCA(t, "other").Client(t, "reader.dfsmr.test")
	_, err = pb.NewMachineServiceClient(s.dial(t, "", foreign)).ListMachines(ctx, &pb.ListMachinesRequest{})
	wantCode(t, err, codes.Unavailable)

	// The identity is the certificate's: matched here by a DNS name.
	reader := s.dial(t, "", s.ca.Client(t, "some-host", "reader.dfsmr.test"))
	if _, err := pb.NewMachineServiceClient(reader).ListMachines(ctx, &pb.ListMachinesRequest{}); err != nil {
		t.Fatalf("reader by certificate: %v", err)
	}
	_, err = pb.NewMachineServiceClient(reader).DefineMachine(ctx, &pb.DefineMachineRequest{Source: "id: x"})
	wantCode(t, err, codes.PermissionDenied)

	// A certificate of the CA whose name the tokens file does not list.
	stranger := s.dial(t, "", s.ca.Client(t, "stranger"))
	_, err = pb.NewMachineServiceClient(stranger).ListMachines(ctx, &pb.ListMachinesRequest{})
	wantCode(t, err, codes.Unauthenticated)

	// The changelog records the certificate's principal as the actor.
	ops := s.dial(t, "", s.ca.Client(t, "ops-client"))
	if _, err := pb.NewInstanceServiceClient(ops).StartInstance(ctx, &pb.StartInstanceRequest{Id: "r1", Machine: "report"}); err != nil {
		t.Fatalf("operator by certificate: %v", err)
	}
	got, err := pb.NewInstanceServiceClient(ops).GetInstance(ctx, &pb.GetInstanceRequest{Id: "r1", IncludeHistory: true})
	if err != nil || len(got.GetInstance().GetHistory()) == 0 || got.GetInstance().GetHistory()[0].GetActor() != "cert-ops" {
		t.Fatalf("history of r1: %v %v; want actor cert-ops", got, err)
	}

	// A token on a mutual TLS connection names the principal.
	asRoot := s.dial(t, s.token["root"], s.ca.Client(t, "stranger"))
	if _, err := pb.NewMachineServiceClient(asRoot).ListMachines(ctx, &pb.ListMachinesRequest{}); err != nil {
		t.Fatalf("token over mutual TLS: %v", err)
	}
}

func TestExposedAddressNeedsTLSAndAuth(t *testing.T) {
	ctx := context.Background()
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "dfsmr.example:5003"} {
		_, err := server.New(ctx, server.Config{Addr: addr, DB: filepath.Join(t.TempDir(), "db")})
		if err == nil || !strings.Contains(err.Error(), "refusing to listen on "+addr) || !strings.Contains(err.Error(), "--insecure") {
			t.Errorf("%s: err = %v, want a refusal naming --insecure", addr, err)
		}
	}
	s, err := server.New(ctx, server.Config{Addr: "0.0.0.0:0", DB: filepath.Join(t.TempDir(), "db"), Insecure: true, Logger: quietLogger(t)})
	if err != nil {
		t.Fatalf("--insecure: %v", err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	ca := tlstest.NewCA(t, "ca")
	pair := ca.Server(t, "s")
	for name, cfg := range map[string]server.Config{
		"cert without key":       {TLSCert: pair.CertFile},
		"client CA without cert": {ClientCA: ca.CertFile, Tokens: "x"},
		"client CA without auth": {TLSCert: pair.CertFile, TLSKey: pair.KeyFile, ClientCA: ca.CertFile},
		"TLS without auth":       {Addr: "0.0.0.0:0", TLSCert: pair.CertFile, TLSKey: pair.KeyFile},
	} {
		cfg.DB = filepath.Join(t.TempDir(), "db")
		if _, err := server.New(ctx, cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func quietLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{tb}, &slog.HandlerOptions{Level: slog.LevelError}))
}

// lockedBuffer is a log sink the server's goroutines and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestCallLogNamesThePrincipal(t *testing.T) {
	var logs lockedBuffer
	s := mustSecure(t, false, func(c *server.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := context.Background()
	if _, err := pb.NewMachineServiceClient(s.dial(t, s.token["viewer"], tlstest.Pair{})).ListMachines(ctx, &pb.ListMachinesRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err := pb.NewMachineServiceClient(s.dial(t, s.token["viewer"], tlstest.Pair{})).DefineMachine(ctx, &pb.DefineMachineRequest{Source: "id: x"})
	wantCode(t, err, codes.PermissionDenied)
	var listed, denied bool
	for _, line := range strings.Split(logs.String(), "\n") {
		listed = listed || (strings.Contains(line, "grpc.method=ListMachines") && strings.Contains(line, "principal=viewer"))
		denied = denied || (strings.Contains(line, "grpc.method=DefineMachine") && strings.Contains(line, "PermissionDenied"))
	}
	if !listed || !denied {
		t.Fatalf("logs lack the allowed call with its principal (%v) or the denied call (%v):\n%s", listed, denied, logs.String())
	}
}

func TestDeviceConnectsOnlyAsItself(t *testing.T) {
	s := mustSecure(t, false, nil)
	ctx := context.Background()
	c := client.New(s.dial(t, s.token["printer-7"], tlstest.Pair{}))
	other, err := c.ConnectDevice(ctx, &pb.DeviceRegistration{DeviceId: "printer-8"}, client.DeviceState{Node: "ready"})
	if err == nil {
		_, err = other.Recv()
	}
	if st := wantCode(t, err, codes.PermissionDenied); !strings.Contains(st.Message(), `"printer-8"`) {
		t.Fatalf("connect as another device: %v; want the device named", err)
	}
	own, err := c.ConnectDevice(ctx, &pb.DeviceRegistration{DeviceId: "printer-7"}, client.DeviceState{Node: "ready"})
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if _, err := own.Recv(); err != nil {
		t.Fatalf("connect as itself: %v", err)
	}
	list, err := pb.NewDeviceServiceClient(s.dial(t, s.token["viewer"], tlstest.Pair{})).ListDevices(ctx, &pb.ListDevicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetDevices()); n != 1 || list.GetDevices()[0].GetId() != "printer-7" {
		t.Fatalf("devices after the refused connect: %v; want only printer-7", list.GetDevices())
	}
}
