package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Reconnection and resume delays.
const (
	// FollowMinBackoff is Follow's first wait before it retries a stream
	// that ended with UNAVAILABLE.
	FollowMinBackoff = 50 * time.Millisecond
	// FollowMaxBackoff caps Follow's wait between retries: the wait doubles
	// with each UNAVAILABLE in a row and resets once a change arrives.
	FollowMaxBackoff = 5 * time.Second
	// ConnectMaxBackoff caps the connection's own reconnect backoff (gRPC's
	// default is 120s). dfsmr servers are usually near and restart quickly,
	// and a worker or a watcher should notice within seconds.
	ConnectMaxBackoff = 5 * time.Second
)

// Client holds one connection to a dfsmr server and the stubs of its
// services. It is safe for concurrent use.
type Client struct {
	// Machines defines and reads machines.
	Machines pb.MachineServiceClient
	// Instances starts, inspects, signals and cancels instances.
	Instances pb.InstanceServiceClient
	// Work leases instances and reports their transitions.
	Work pb.WorkServiceClient
	// Changes streams the changelog; see also Follow.
	Changes pb.ChangesServiceClient
	// Admin holds the operator's maintenance calls; see also Backup.
	Admin pb.AdminServiceClient
	// Devices takes print orders and lists devices; see also
	// ConnectDevice.
	Devices pb.DeviceServiceClient
	// Cluster shows and changes the cluster of servers: status, members,
	// adding and removing members, handing leadership over.
	Cluster pb.ClusterServiceClient

	conn *grpc.ClientConn
}

// Dial creates a client for the server at addr ("host:port", or any target
// grpc.NewClient accepts). Like grpc.NewClient it does not connect: the
// first call does.
//
// Dial puts its defaults before opts, so that a later option of the same
// kind replaces them: insecure transport credentials (pass WithTLS or
// grpc.WithTransportCredentials for TLS, and WithToken to authenticate; a
// credentials bundle cannot be combined with them), and a reconnect
// backoff capped at ConnectMaxBackoff.
func Dial(addr string, opts ...grpc.DialOption) (*Client, error) {
	bc := backoff.DefaultConfig
	bc.MaxDelay = ConnectMaxBackoff
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: 20 * time.Second}),
	}, opts...)
	conn, err := grpc.NewClient(addr, all...)
	if err != nil {
		return nil, fmt.Errorf("dfsmr client for %q: %w", addr, err)
	}
	return New(conn), nil
}

// New wraps an existing connection; Close closes it.
func New(conn *grpc.ClientConn) *Client {
	return &Client{
		Machines:  pb.NewMachineServiceClient(conn),
		Instances: pb.NewInstanceServiceClient(conn),
		Work:      pb.NewWorkServiceClient(conn),
		Changes:   pb.NewChangesServiceClient(conn),
		Admin:     pb.NewAdminServiceClient(conn),
		Devices:   pb.NewDeviceServiceClient(conn),
		Cluster:   pb.NewClusterServiceClient(conn),
		conn:      conn,
	}
}

// Conn returns the underlying connection, for other services (health,
// reflection) on the same server.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection; calls in flight fail with CANCELED.
func (c *Client) Close() error { return c.conn.Close() }

// ListAllInstances returns every instance matching req's filters, walking
// all the pages from req.PageToken on. With limit > 0 it stops after limit
// instances, and asks for pages no larger than limit when req.PageSize is
// zero. req is not modified.
func (c *Client) ListAllInstances(ctx context.Context, req *pb.ListInstancesRequest, limit int) ([]*pb.Instance, error) {
	r := proto.CloneOf(req)
	if r == nil {
		r = &pb.ListInstancesRequest{}
	}
	if r.PageSize == 0 && limit > 0 {
		r.PageSize = int32(min(limit, 1000))
	}
	var out []*pb.Instance
	for {
		resp, err := c.Instances.ListInstances(ctx, r)
		if err != nil {
			return out, err
		}
		out = append(out, resp.GetInstances()...)
		if limit > 0 && len(out) >= limit {
			return out[:limit], nil
		}
		if resp.GetNextPageToken() == "" {
			return out, nil
		}
		r.PageToken = resp.GetNextPageToken()
	}
}

// ListAllMachines returns the latest version of every machine, walking all
// the pages. With limit > 0 it stops after limit machines.
func (c *Client) ListAllMachines(ctx context.Context, limit int) ([]*pb.Machine, error) {
	r := &pb.ListMachinesRequest{}
	if limit > 0 {
		r.PageSize = int32(min(limit, 1000))
	}
	var out []*pb.Machine
	for {
		resp, err := c.Machines.ListMachines(ctx, r)
		if err != nil {
			return out, err
		}
		out = append(out, resp.GetMachines()...)
		if limit > 0 && len(out) >= limit {
			return out[:limit], nil
		}
		if resp.GetNextPageToken() == "" {
			return out, nil
		}
		r.PageToken = resp.GetNextPageToken()
	}
}

// errorInfo returns the value of key in the status's ErrorInfo metadata.
func errorInfo(st *status.Status, key string) (string, bool) {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if v, ok := info.GetMetadata()[key]; ok {
				return v, true
			}
		}
	}
	return "", false
}

// OldestKept returns the oldest sequence number the server keeps when err
// is its refusal of a Changes stream that starts before it: OUT_OF_RANGE
// with the ErrorInfo reason CHANGES_COMPACTED and metadata "oldest_seq"
// (retention deleted the changes asked for).
func OldestKept(err error) (uint64, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.OutOfRange {
		return 0, false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == "CHANGES_COMPACTED" {
			seq, err := strconv.ParseUint(info.GetMetadata()["oldest_seq"], 10, 64)
			return seq, err == nil
		}
	}
	return 0, false
}

// FollowRetained is Follow for a reader of every change the server keeps:
// where retention deleted the changes from req.FromSeq on (or from the
// point a resumed stream asked for), it goes on from the oldest change
// kept instead of failing. The changes deleted are not delivered; none is
// delivered twice.
func (c *Client) FollowRetained(ctx context.Context, req *pb.ChangesRequest, fn func(*pb.Change) error) error {
	r := proto.CloneOf(req)
	if r == nil {
		r = &pb.ChangesRequest{}
	}
	var next uint64 // the seq after the last delivered
	deliver := func(ch *pb.Change) error {
		next = ch.GetSeq() + 1
		return fn(ch)
	}
	for {
		err := c.Follow(ctx, r, deliver)
		oldest, ok := OldestKept(err)
		if !ok || oldest <= max(r.FromSeq, next) {
			return err
		}
		r.FromSeq = oldest
	}
}

// HeadSeqHeader is the response header of a Changes stream that carries
// the head at registration: the last sequence number committed when the
// stream started, in decimal.
const HeadSeqHeader = "dfsmr-head-seq"

// Follow streams the changes matching req from req.FromSeq on and calls fn
// for each, in sequence order, each exactly once, until ctx ends (it
// returns ctx.Err()) or fn returns an error (it returns that error). req is
// not modified.
//
// It resumes by itself where the last stream stopped: at once when the
// server ended the stream with ABORTED because the watcher lagged (from the
// ErrorInfo metadata "resume_from_seq", else the last seq received + 1),
// and after a capped exponential backoff (FollowMinBackoff doubling up to
// FollowMaxBackoff) when it ended or could not start with UNAVAILABLE,
// as when the server restarts (or the stream ended without a status, which
// the server never does without stop_at_head but a proxy might). Any other
// status, OUT_OF_RANGE included (the resume point was compacted away), is
// returned.
//
// req.FromSeq = 0 means "from now". So that a reconnection before the
// first change misses nothing either, Follow turns "now" into an exact
// sequence number: the head that the first stream reports in its
// HeadSeqHeader response header, plus one. If the server does not report
// it, Follow keeps asking for from_seq = 0, and a reconnection before the
// first change may miss changes committed while it was disconnected.
//
// With req.StopAtHead, Follow replays instead of tailing: it returns nil
// once it has delivered the changes through the head of the first stream
// (its HeadSeqHeader), which the server ends with OK. A resumed stream
// stops at its own, later head; Follow drops the changes after the first
// head, so the result is the same as without a resume.
func (c *Client) Follow(ctx context.Context, req *pb.ChangesRequest, fn func(*pb.Change) error) error {
	r := proto.CloneOf(req)
	if r == nil {
		r = &pb.ChangesRequest{}
	}
	f := &follow{c: c, r: r, fn: fn}
	wait := FollowMinBackoff
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		progressed, err := f.once(ctx)
		if progressed {
			wait = FollowMinBackoff
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if cb, ok := errors.AsType[*callbackError](err); ok {
			return cb.err
		}
		if errors.Is(err, errReachedHead) || (r.StopAtHead && errors.Is(err, io.EOF)) {
			return nil
		}
		st, ok := status.FromError(err)
		switch {
		case errors.Is(err, io.EOF):
			// The server never ends a stream with OK unless asked to stop
			// at the head; a proxy might. Treat it like a restart.
			fallthrough
		case ok && st.Code() == codes.Unavailable:
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return ctx.Err()
			case <-timer.C:
			}
			wait = min(2*wait, FollowMaxBackoff)
			continue
		case !ok:
			return err
		case st.Code() == codes.Aborted:
			if v, ok := errorInfo(st, "resume_from_seq"); ok {
				if from, perr := strconv.ParseUint(v, 10, 64); perr == nil && from > r.FromSeq {
					r.FromSeq = from
				}
			}
			// A lagging watcher resumes at once: the replay is served from
			// the store and cannot lag.
			continue
		default:
			return err
		}
	}
}

// testHookResolved, when set by a test, learns the sequence number that
// Follow resolved "from now" to.
var testHookResolved func(from uint64)

// errReachedHead ends a StopAtHead follow whose resumed stream went past
// the first stream's head.
var errReachedHead = errors.New("dfsmr client: reached the head")

// follow is the state of one Follow call across its streams.
type follow struct {
	c  *Client
	r  *pb.ChangesRequest
	fn func(*pb.Change) error
	// stopAt is the head of the first stream that reported one, when
	// r.StopAtHead; stopKnown says it is set.
	stopAt    uint64
	stopKnown bool
}

// once runs one stream, advancing r.FromSeq past every change handed to
// fn. It reports whether any change arrived, and why the stream ended
// (never nil): an error from fn as a *callbackError, errReachedHead, io.EOF
// when the server ended the stream with OK, a status otherwise.
func (f *follow) once(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := f.c.Changes.Changes(ctx, f.r)
	if err != nil {
		return false, err
	}
	if f.r.FromSeq == 0 || (f.r.StopAtHead && !f.stopKnown) {
		f.readHead(stream)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return progressed, err
		}
		ch := resp.GetChange()
		if ch.GetSeq() < f.r.FromSeq {
			// Never expected: the server promises increasing seqs from
			// from_seq. Dropping it keeps the "exactly once" promise.
			continue
		}
		if f.stopKnown && ch.GetSeq() > f.stopAt {
			return progressed, errReachedHead
		}
		progressed = true
		f.r.FromSeq = ch.GetSeq() + 1
		if err := f.fn(ch); err != nil {
			return progressed, &callbackError{err}
		}
	}
}

// readHead reads the stream's head from its response headers, which the
// server sends once the stream is registered: "from now" becomes the seq
// after it, and a StopAtHead follow stops there. Without the header (or if
// the stream failed first, which Recv then reports) nothing changes.
func (f *follow) readHead(stream grpc.ServerStreamingClient[pb.ChangesResponse]) {
	md, err := stream.Header()
	if err != nil {
		return
	}
	vs := md.Get(HeadSeqHeader)
	if len(vs) != 1 {
		return
	}
	head, err := strconv.ParseUint(vs[0], 10, 64)
	if err != nil {
		return
	}
	if f.r.FromSeq == 0 {
		f.r.FromSeq = head + 1
		if testHookResolved != nil {
			testHookResolved(f.r.FromSeq)
		}
	}
	if f.r.StopAtHead && !f.stopKnown {
		f.stopAt, f.stopKnown = head, true
	}
}

// callbackError marks fn's error so that a status returned by fn is not
// mistaken for the stream's.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }
func (e *callbackError) Unwrap() error { return e.err }
