package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // the call failed
	exitUsage  = 2 // the command line is wrong
	exitNoWork = 3 // ready: nothing to lease
)

// Defaults of the global flags.
const (
	defaultAddr    = "127.0.0.1:5003"
	defaultTimeout = 10 * time.Second
	envAddr        = "DFSMR_ADDR"
	envToken       = "DFSMR_TOKEN"
	envTLSCA       = "DFSMR_TLS_CA"
	envClientCert  = "DFSMR_CLIENT_CERT"
	envClientKey   = "DFSMR_CLIENT_KEY"
)

// Output formats.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// Colour modes (--color).
const (
	colorAuto   = "auto"
	colorAlways = "always"
	colorNever  = "never"
	envNoColor  = "NO_COLOR"
)

// app holds what every subcommand shares: the global flags, the streams and
// the connection, dialed on first use.
type app struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	addr    string
	output  string
	timeout time.Duration
	token   string
	tls     bool
	tlsCA   string
	tlsCert string
	tlsKey  string
	color   string
	// linearizable asks for linearizable reads (--linearizable).
	linearizable bool

	c *client.Client
	// streamNotes, when set before the first dial, is told how Changes
	// streams fare (changes -f).
	streamNotes *followNotes
	// colored says whether change lines are coloured (--color, NO_COLOR,
	// whether stdout is a terminal); set before any subcommand runs.
	colored bool
}

// run is the whole CLI: it parses args, runs one subcommand and returns the
// exit code. Everything it prints goes to stdout and stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	defer func() {
		if a.c != nil {
			a.c.Close()
		}
	}()
	root := a.rootCommand()
	a.extendRoot(root) // --version and shell completion of ids
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	return a.report(cmd, err)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "dfsmr",
		Short: "Command-line client of a dfsmr server",
		Long: `dfsmr talks to a dfsmr server: define machines, start and inspect instances,
lease and transition work, and tail the changelog.

Output is a human table by default; -o json prints protojson, one object per
line, for scripts (outputs that are no proto message name their fields in the
same lowerCamelCase). Times are UTC, RFC 3339. Names and text that come from
the server or from files are escaped in tables and error lines: a control
character prints as \x1b, a bidirectional control as \u202e.

--token needs TLS, except to a loopback address (127.0.0.1, ::1, localhost):
a token is never sent in clear to another host.

Exit codes: 0 success; 1 the call failed (printed as "dfsmr: CODE: message",
then one line per field violation); 2 usage error; 3 "ready" found no work.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if a.output != outputTable && a.output != outputJSON {
				return usageErrorf("--output must be %s or %s, not %q", outputTable, outputJSON, a.output)
			}
			if a.timeout < 0 {
				return usageErrorf("--timeout must not be negative")
			}
			switch a.color {
			case colorAlways:
				a.colored = true
			case colorNever:
			case colorAuto:
				a.colored = os.Getenv(envNoColor) == "" && os.Getenv("TERM") != "dumb" && isTerminal(a.stdout)
			default:
				return usageErrorf("--color must be %s, %s or %s, not %q", colorAuto, colorAlways, colorNever, a.color)
			}
			return nil
		},
	}
	addr := defaultAddr
	if env, ok := os.LookupEnv(envAddr); ok && env != "" {
		addr = env
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.addr, "addr", addr, "server address (env "+envAddr+")")
	pf.StringVarP(&a.output, "output", "o", outputTable, "output format: table or json (protojson, one object per line)")
	pf.DurationVar(&a.timeout, "timeout", defaultTimeout, "deadline of each call (0: none); ready adds its --wait, and streams have none")
	pf.StringVar(&a.token, "token", os.Getenv(envToken), "bearer token (env "+envToken+"); needs TLS unless --addr is a loopback address")
	pf.BoolVar(&a.tls, "tls", false, "use TLS with the system's root CAs (implied by --tls-ca and --tls-cert)")
	pf.StringVar(&a.tlsCA, "tls-ca", os.Getenv(envTLSCA), "PEM bundle of the CAs of the server's certificate (env "+envTLSCA+")")
	pf.StringVar(&a.tlsCert, "tls-cert", os.Getenv(envClientCert), "PEM client certificate, for mutual TLS (env "+envClientCert+")")
	pf.BoolVar(&a.linearizable, "linearizable", false, "reads see every write acknowledged before them: a follower of a cluster asks the leader")
	pf.StringVar(&a.color, "color", colorAuto, "colour change lines: auto (on a terminal, unless "+envNoColor+" is set), always or never")
	pf.StringVar(&a.tlsKey, "tls-key", os.Getenv(envClientKey), "PEM key of --tls-cert (env "+envClientKey+")")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	root.AddGroup(
		&cobra.Group{ID: "machines", Title: "Machines:"},
		&cobra.Group{ID: "instances", Title: "Instances:"},
		&cobra.Group{ID: "work", Title: "Work (workers):"},
		&cobra.Group{ID: "changes", Title: "Changelog:"},
		&cobra.Group{ID: "admin", Title: "Administration:"},
		&cobra.Group{ID: "devices", Title: "Devices (printers):"},
	)
	for _, c := range []*cobra.Command{
		a.defineCommand(), a.machinesCommand(), a.machineCommand(), a.graphCommand(),
	} {
		c.GroupID = "machines"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{
		a.startCommand(), a.instancesCommand(), a.getCommand(), a.signalCommand(), a.cancelCommand(), a.retryCommand(),
	} {
		c.GroupID = "instances"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{
		a.readyCommand(), a.transitionCommand(), a.heartbeatCommand(), a.relinquishCommand(),
	} {
		c.GroupID = "work"
		root.AddCommand(c)
	}
	c := a.changesCommand()
	c.GroupID = "changes"
	root.AddCommand(c)
	root.AddCommand(a.tokenCommand())
	for _, c := range []*cobra.Command{a.backupCommand(), a.clusterCommand()} {
		c.GroupID = "admin"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{
		a.devicesCommand(), a.orderCommand(),
		a.operatorCommand(signalRetrieved, "Mark a print job's part as taken off the bed (signal retrieved)"),
		a.operatorCommand(signalRecovered, "Mark a failed print job's printer as cleared (signal recovered)"),
		a.clearedCommand(),
	} {
		c.GroupID = "devices"
		root.AddCommand(c)
	}
	root.AddCommand(a.printerSimCommand())
	root.AddCommand(a.benchCommand(), a.reportDemoCommand())
	root.AddCommand(a.dstCommand())
	return root
}

// client dials on first use, so that usage errors and offline commands
// (graph --file) never touch the network. Every unary call gets the
// --timeout deadline.
func (a *app) client() (*client.Client, error) {
	if a.c != nil {
		return a.c, nil
	}
	opts, err := a.credentials()
	if err != nil {
		return nil, err
	}
	opts = append(opts, grpc.WithChainUnaryInterceptor(timeoutInterceptor(a.timeout)))
	if a.linearizable {
		opts = append(opts, client.WithLinearizableReads()...)
	}
	if a.streamNotes != nil {
		opts = append(opts, grpc.WithChainStreamInterceptor(a.streamNotes.interceptor()))
	}
	c, err := client.Dial(a.addr, opts...)
	if err != nil {
		return nil, err
	}
	a.c = c
	return c, nil
}

// credentials returns the dial options of the TLS and token flags.
func (a *app) credentials() ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if a.tls || a.tlsCA != "" || a.tlsCert != "" || a.tlsKey != "" {
		o, err := client.WithTLS(client.TLSFiles{CA: a.tlsCA, Cert: a.tlsCert, Key: a.tlsKey})
		if err != nil {
			return nil, usageError{err}
		}
		opts = append(opts, o)
	}
	switch {
	case a.token == "":
	case len(opts) > 0:
		opts = append(opts, client.WithToken(a.token))
	case !loopbackAddr(a.addr):
		return nil, usageErrorf("--token without TLS goes only to a loopback address (127.0.0.1, ::1, localhost), not %s: add --tls or --tls-ca; a token sent in the clear is a token given away", clean(a.addr))
	default:
		// The dialer checks again what the name resolves to and
		// where it connected.
		opts = append(opts, client.WithLoopbackToken(a.token)...)
	}
	return opts, nil
}

// loopbackAddr reports whether addr names this machine: a loopback IP or
// "localhost".
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	return strings.EqualFold(host, "localhost")
}

// timeoutInterceptor gives each unary call without a deadline one of d
// (plus the wait of a Ready long poll), so that listing every page gives
// each page the full timeout.
func timeoutInterceptor(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok && d > 0 {
			t := d
			if r, ok := req.(*pb.ReadyRequest); ok {
				t += r.GetWait().AsDuration()
			}
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, t)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// usageError is a wrong command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// codeError ends the command with a given exit code and message.
type codeError struct {
	code int
	msg  string
}

func (e *codeError) Error() string { return e.msg }

// ranError marks an error returned by a subcommand's RunE, as opposed to
// one of cobra's own (unknown command or flag, wrong number of arguments),
// which are usage errors.
type ranError struct{ err error }

func (e ranError) Error() string { return e.err.Error() }
func (e ranError) Unwrap() error { return e.err }

// runE wraps a subcommand's body so that run can tell its errors from
// cobra's.
func runE(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := f(cmd, args); err != nil {
			return ranError{err}
		}
		return nil
	}
}

// args wraps a cobra argument validator so that its errors are usage
// errors.
func args(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// report prints err to stderr and returns the exit code it deserves.
func (a *app) report(cmd *cobra.Command, err error) int {
	var (
		usage usageError
		exit  *codeError
		ran   ranError
	)
	switch {
	case errors.As(err, &exit):
		fmt.Fprintf(a.stderr, "dfsmr: %s\n", cleanLines(exit.msg))
		return exit.code
	case errors.As(err, &usage) || !errors.As(err, &ran):
		fmt.Fprintf(a.stderr, "dfsmr: %s\nRun '%s --help' for usage.\n", cleanLines(err.Error()), cmd.CommandPath())
		return exitUsage
	}
	if st, ok := status.FromError(ran.err); ok {
		a.printStatus(st)
		return exitFailed
	}
	fmt.Fprintf(a.stderr, "dfsmr: %v\n", indentLines(ran.err.Error()))
	return exitFailed
}

// printStatus prints "dfsmr: CODE: message" and then the field
// violations, one per line as "  field: description". Every problem is
// printed once: when there are violations, a multi-line message (a
// definition's problems, one per line, each also a violation) is cut to its
// first line, and a violation that the printed message already states is
// not repeated.
func (a *app) printStatus(st *status.Status) {
	var violations []*errdetails.BadRequest_FieldViolation
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			violations = append(violations, br.GetFieldViolations()...)
		}
	}
	msg := st.Message()
	if len(violations) > 0 {
		msg, _, _ = strings.Cut(msg, "\n")
	}
	fmt.Fprintf(a.stderr, "dfsmr: %s: %s\n", codeName(st), indentLines(msg))
	for _, v := range violations {
		if v.GetDescription() != "" && strings.Contains(msg, v.GetDescription()) {
			continue
		}
		if v.GetField() != "" {
			fmt.Fprintf(a.stderr, "  %s: %s\n", indentLines(v.GetField()), indentLines(v.GetDescription()))
		} else {
			fmt.Fprintf(a.stderr, "  %s\n", indentLines(v.GetDescription()))
		}
	}
}

// codeName is the canonical name of a status code, as in the proto
// comments: "INVALID_ARGUMENT", "ABORTED".
func codeName(st *status.Status) string {
	return code.Code(st.Code()).String()
}

// indentLines escapes every line (cleanLines) and indents every line after
// the first, so that a multi-line message stays readable under its
// "dfsmr:" prefix. Every error line the CLI prints goes through it.
func indentLines(s string) string {
	return strings.ReplaceAll(cleanLines(strings.TrimRight(s, "\n")), "\n", "\n  ")
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// style is how change lines are printed now.
func (a *app) style() lineStyle {
	return lineStyle{color: a.colored, now: time.Now()}
}
