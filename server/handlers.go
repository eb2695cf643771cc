package server

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server/auth"
	"github.com/dfsmr/dfsmr/server/changes"
	"github.com/dfsmr/dfsmr/server/device"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Page sizes of the List RPCs.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// MaxResponseBytes bounds the encoded records of one List page or
// GetInstance history page: with the instance, the token and the framing
// the response stays well under the 4 MiB a client accepts by default. A
// page ends early, with a next-page token, when the next record would pass
// it; a page always holds at least one record, and one record (an
// instance of 64 params of 4 KiB, a change of as many) is far smaller.
const MaxResponseBytes = 3 << 20

// handlers translate between the proto API and the engine. They hold no
// state of their own but the slots that bound concurrent big reads.
type handlers struct {
	pb.UnimplementedMachineServiceServer
	pb.UnimplementedInstanceServiceServer
	pb.UnimplementedWorkServiceServer
	pb.UnimplementedChangesServiceServer
	pb.UnimplementedDeviceServiceServer
	eng      *engine.Engine
	hub      *changes.Hub
	log      *slog.Logger
	sessions *device.Sessions
	// reads bounds the List calls and history pages being built at once.
	reads readSlots
	// draining ends when the server starts to stop: calls that wait for
	// work (and device streams) end then with errShuttingDown.
	draining context.Context
}

// errShuttingDown ends a call that was waiting when the server began to
// stop; the client retries on another connection (UNAVAILABLE).
var errShuttingDown = errors.New("server is shutting down")

// untilDraining returns ctx, also cancelled when the server starts to stop,
// and the function that releases it.
func (h *handlers) untilDraining(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(h.draining, cancel)
	return ctx, func() { stop(); cancel() }
}

// actor names the caller of an instance or machine RPC in the changelog:
// its principal, or its peer address without authentication. Work RPCs are
// recorded under their principal too, or without authentication under the
// worker name (see principal).
func actor(ctx context.Context) string {
	if p, ok := auth.FromContext(ctx); ok {
		return p.Name
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "unknown"
}

// pageSize reads a request's page size field: default def, capped at max.
func pageSize(field string, size int32, def, max int) (int, error) {
	switch {
	case size < 0:
		return 0, &fsm.InvalidError{Field: field, Reason: "must not be negative"}
	case size == 0:
		return def, nil
	}
	return min(int(size), max), nil
}

// pageArgs reads a List request's page size (default DefaultPageSize,
// capped at MaxPageSize) and page token, issued for the same kind of list
// and scope (its filters).
func pageArgs(size int32, token string, kind byte, scope ...string) (n int, after string, err error) {
	if n, err = pageSize("page_size", size, DefaultPageSize, MaxPageSize); err != nil {
		return 0, "", err
	}
	if token == "" {
		return n, "", nil
	}
	key, err := decodePageToken("page_token", token, kind, scope...)
	return n, string(key), err
}

// Page token kinds: a token of one list is refused by another.
const (
	tokenInstances byte = 'i'
	tokenMachines  byte = 'm'
	tokenDevices   byte = 'd'
	tokenHistory   byte = 'h'
)

const tokenVersion = 1

// encodePageToken returns the token of the page after key, in a list of
// kind and scope. Tokens are opaque to clients: a version, the kind, a
// hash of the scope (the request's filters), the key and a checksum, so
// that a token that this server did not issue, or one sent with other
// filters, is refused as INVALID_ARGUMENT rather than read as a key.
func encodePageToken(key []byte, kind byte, scope ...string) string {
	b := []byte{tokenVersion, kind}
	b = binary.BigEndian.AppendUint64(b, scopeHash(scope))
	b = append(b, key...)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodePageToken returns the key of a token from encodePageToken.
func decodePageToken(field, token string, kind byte, scope ...string) ([]byte, error) {
	bad := func(reason string) error { return &fsm.InvalidError{Field: field, Reason: reason} }
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < 2+8+4 {
		return nil, bad("is not a token returned by this server")
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	switch {
	case crc32.ChecksumIEEE(body) != sum, body[0] != tokenVersion, body[1] != kind:
		return nil, bad("is not a token returned by this server")
	case binary.BigEndian.Uint64(body[2:10]) != scopeHash(scope):
		return nil, bad("was issued for other filters; send the filters of the first page")
	}
	return body[10:], nil
}

func scopeHash(scope []string) uint64 {
	h := fnv.New64a()
	for _, s := range scope {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// pageBudget fills one page: at most n records and MaxResponseBytes of
// them encoded.
type pageBudget struct {
	n, count int
	bytes    int
	full     bool
}

// add reports whether m still fits in the page and counts it if so. The
// first record always fits, so every page makes progress.
func (p *pageBudget) add(m proto.Message) bool {
	if p.count == p.n {
		p.full = true
		return false
	}
	// The record's bytes with its field tag and length prefix.
	size := protowire.SizeBytes(proto.Size(m)) + 2
	if p.count > 0 && p.bytes+size > MaxResponseBytes {
		p.full = true
		return false
	}
	p.count++
	p.bytes += size
	return true
}

func durationArg(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, &fsm.InvalidError{Field: field, Reason: err.Error()}
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, &fsm.InvalidError{Field: field, Reason: "must not be negative"}
	}
	return v, nil
}

func (h *handlers) DefineMachine(ctx context.Context, req *pb.DefineMachineRequest) (*pb.DefineMachineResponse, error) {
	file := req.GetFileName()
	if file == "" {
		file = "source"
	}
	info, created, err := h.eng.DefineMachine(ctx, file, []byte(req.GetSource()), actor(ctx))
	if err != nil {
		return nil, err
	}
	return &pb.DefineMachineResponse{Machine: machineToProto(info), Created: created}, nil
}

func (h *handlers) GetMachine(ctx context.Context, req *pb.GetMachineRequest) (*pb.GetMachineResponse, error) {
	info, versions, err := h.eng.GetMachine(ctx, req.GetId(), req.GetVersion())
	if err != nil {
		return nil, err
	}
	return &pb.GetMachineResponse{Machine: machineToProto(info), Versions: versions, Breaker: breakerToProto(info.Breaker, info.Machine.Breaker)}, nil
}

func (h *handlers) ListMachines(ctx context.Context, req *pb.ListMachinesRequest) (*pb.ListMachinesResponse, error) {
	n, after, err := pageArgs(req.GetPageSize(), req.GetPageToken(), tokenMachines)
	if err != nil {
		return nil, err
	}
	release, err := h.reads.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	resp := &pb.ListMachinesResponse{}
	b, last := pageBudget{n: n}, ""
	err = h.eng.ListMachines(ctx, after, func(m engine.MachineInfo) bool {
		p := machineToProto(m)
		if !b.add(p) {
			return false
		}
		resp.Machines, last = append(resp.Machines, p), m.ID
		return true
	})
	if err != nil {
		return nil, err
	}
	if b.full {
		resp.NextPageToken = encodePageToken([]byte(last), tokenMachines)
	}
	return resp, nil
}

func (h *handlers) StartInstance(ctx context.Context, req *pb.StartInstanceRequest) (*pb.StartInstanceResponse, error) {
	if err := errors.Join(checkNames("id", req.GetId()), checkParamKeys("params", req.GetParams())); err != nil {
		return nil, err
	}
	delay, err := durationArg("start_delay", req.GetStartDelay())
	if err != nil {
		return nil, err
	}
	a := engine.StartArgs{
		ID:       req.GetId(),
		Machine:  req.GetMachine(),
		Version:  req.GetVersion(),
		Params:   req.GetParams(),
		Priority: req.GetPriority(),
		Delay:    delay,
		Actor:    actor(ctx),
	}
	if st := req.GetStartTime(); st != nil {
		if err := st.CheckValid(); err != nil {
			return nil, &fsm.InvalidError{Field: "start_time", Reason: err.Error()}
		}
		a.At = st.AsTime()
	}
	in, created, err := h.eng.StartInstance(ctx, a)
	if err != nil {
		return nil, err
	}
	return &pb.StartInstanceResponse{Instance: instanceToProto(&in, nil), Created: created}, nil
}

func (h *handlers) GetInstance(ctx context.Context, req *pb.GetInstanceRequest) (*pb.GetInstanceResponse, error) {
	if !req.GetIncludeHistory() {
		in, err := h.eng.GetInstance(ctx, req.GetId())
		if err != nil {
			return nil, err
		}
		return &pb.GetInstanceResponse{Instance: instanceToProto(&in, nil)}, nil
	}
	n, err := pageSize("history_page_size", req.GetHistoryPageSize(), h.eng.MaxHistory(), h.eng.MaxHistory())
	if err != nil {
		return nil, err
	}
	var from uint64
	if t := req.GetHistoryPageToken(); t != "" {
		key, err := decodePageToken("history_page_token", t, tokenHistory, req.GetId())
		if err != nil {
			return nil, err
		}
		if len(key) != 8 {
			return nil, &fsm.InvalidError{Field: "history_page_token", Reason: "is not a token returned by this server"}
		}
		from = binary.BigEndian.Uint64(key)
	}
	release, err := h.reads.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	var hist []*pb.Change
	b := pageBudget{n: n}
	in, next, err := h.eng.InstanceHistory(ctx, req.GetId(), from, func(c fsm.Change) bool {
		p := changeToProto(&c)
		if !b.add(p) {
			return false
		}
		hist = append(hist, p)
		return true
	})
	if err != nil {
		return nil, err
	}
	resp := &pb.GetInstanceResponse{Instance: instanceToProto(&in, nil)}
	resp.Instance.History = hist
	if next != 0 {
		resp.NextHistoryPageToken = encodePageToken(binary.BigEndian.AppendUint64(nil, next), tokenHistory, req.GetId())
	}
	return resp, nil
}

func (h *handlers) ListInstances(ctx context.Context, req *pb.ListInstancesRequest) (*pb.ListInstancesResponse, error) {
	scope := []string{req.GetMachine(), req.GetNode(), strconv.Itoa(int(req.GetStatus()))}
	n, after, err := pageArgs(req.GetPageSize(), req.GetPageToken(), tokenInstances, scope...)
	if err != nil {
		return nil, err
	}
	if s := req.GetStatus(); s < 0 || s > pb.InstanceStatus_INSTANCE_STATUS_HELD {
		return nil, &fsm.InvalidError{Field: "status", Reason: "unknown status"}
	}
	release, err := h.reads.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	f := store.InstanceFilter{Machine: req.GetMachine(), Node: req.GetNode(), Status: fsm.Status(req.GetStatus())}
	resp := &pb.ListInstancesResponse{}
	b, last := pageBudget{n: n}, ""
	err = h.eng.ListInstances(ctx, f, after, func(in fsm.Instance) bool {
		p := instanceToProto(&in, nil)
		if !b.add(p) {
			return false
		}
		resp.Instances, last = append(resp.Instances, p), in.ID
		return true
	})
	if err != nil {
		return nil, err
	}
	if b.full {
		resp.NextPageToken = encodePageToken([]byte(last), tokenInstances, scope...)
	}
	return resp, nil
}

func (h *handlers) SignalInstance(ctx context.Context, req *pb.SignalInstanceRequest) (*pb.SignalInstanceResponse, error) {
	if err := errors.Join(checkNames("signal", req.GetSignal()), checkParamKeys("params", req.GetParams())); err != nil {
		return nil, err
	}
	in, err := h.eng.SignalInstance(ctx, req.GetId(), req.GetSignal(), req.GetParams(), actor(ctx))
	if err != nil {
		return nil, err
	}
	return &pb.SignalInstanceResponse{Instance: instanceToProto(&in, nil)}, nil
}

func (h *handlers) CancelInstance(ctx context.Context, req *pb.CancelInstanceRequest) (*pb.CancelInstanceResponse, error) {
	in, err := h.eng.CancelInstance(ctx, req.GetId(), req.GetReason(), actor(ctx))
	if err != nil {
		return nil, err
	}
	return &pb.CancelInstanceResponse{Instance: instanceToProto(&in, nil)}, nil
}

func (h *handlers) RetryInstance(ctx context.Context, req *pb.RetryInstanceRequest) (*pb.RetryInstanceResponse, error) {
	in, err := h.eng.RetryInstance(ctx, req.GetId(), req.GetReason(), actor(ctx))
	if err != nil {
		return nil, err
	}
	return &pb.RetryInstanceResponse{Instance: instanceToProto(&in, nil)}, nil
}

func (h *handlers) CancelInstances(ctx context.Context, req *pb.CancelInstancesRequest) (*pb.CancelInstancesResponse, error) {
	if s := req.GetStatus(); s < 0 || s > pb.InstanceStatus_INSTANCE_STATUS_HELD {
		return nil, &fsm.InvalidError{Field: "status", Reason: "unknown status"}
	}
	a := engine.BulkArgs{Machine: req.GetMachine(), Node: req.GetNode(), Status: fsm.Status(req.GetStatus()), All: req.GetAll(),
		DryRun: req.GetDryRun(), Reason: req.GetReason(), Actor: actor(ctx)}
	if req.ExpectedCount != nil {
		a.Expected, a.HasExpected = int(req.GetExpectedCount()), true
	}
	r, err := h.eng.CancelInstances(ctx, a)
	if err != nil {
		return nil, err
	}
	return &pb.CancelInstancesResponse{Matched: uint32(r.Matched), Changed: uint32(r.Changed), Skipped: uint32(r.Skipped), SampleIds: r.Sample}, nil
}

func (h *handlers) RetryInstances(ctx context.Context, req *pb.RetryInstancesRequest) (*pb.RetryInstancesResponse, error) {
	a := engine.BulkArgs{Machine: req.GetMachine(), Node: req.GetNode(), All: req.GetAll(),
		DryRun: req.GetDryRun(), Reason: req.GetReason(), Actor: actor(ctx)}
	if req.ExpectedCount != nil {
		a.Expected, a.HasExpected = int(req.GetExpectedCount()), true
	}
	r, err := h.eng.RetryInstances(ctx, a)
	if err != nil {
		return nil, err
	}
	return &pb.RetryInstancesResponse{Matched: uint32(r.Matched), Changed: uint32(r.Changed), Skipped: uint32(r.Skipped), SampleIds: r.Sample}, nil
}

// principal is the authenticated caller of a work RPC, empty without
// authentication. It holds the leases it takes and is the actor of the
// changes its calls make; the worker name the request gives is recorded
// beside it (Change.worker), a label the client chose.
func principal(ctx context.Context) string {
	if p, ok := auth.FromContext(ctx); ok {
		return p.Name
	}
	return ""
}

// mayWork checks that a worker restricted to some machines may work on
// instance id. An instance of another machine is answered as a missing
// one, so that such a worker does not learn which ids exist elsewhere.
func (h *handlers) mayWork(ctx context.Context, id string) error {
	if p, ok := auth.FromContext(ctx); !ok || !p.Restricted() {
		return nil
	}
	in, err := h.eng.GetInstance(ctx, id)
	if err != nil {
		return err
	}
	if auth.CheckMachine(ctx, in.Machine) != nil {
		return fmt.Errorf("instance %q: %w", id, store.ErrNotFound)
	}
	return nil
}

func (h *handlers) Ready(ctx context.Context, req *pb.ReadyRequest) (*pb.ReadyResponse, error) {
	if err := auth.CheckMachine(ctx, req.GetMachine()); err != nil {
		return nil, err
	}
	if err := checkNames("worker", req.GetWorker()); err != nil {
		return nil, err
	}
	wait, err := durationArg("wait", req.GetWait())
	if err != nil {
		return nil, err
	}
	callCtx := ctx
	if wait > 0 {
		var release context.CancelFunc
		ctx, release = h.untilDraining(ctx)
		defer release()
	}
	list, err := h.eng.ReadyBatch(ctx, engine.ReadyArgs{
		Worker: req.GetWorker(), Principal: principal(ctx), Machine: req.GetMachine(), Node: req.GetNode(), Wait: wait, Max: int(req.GetMaxCount()),
	})
	if errors.Is(err, context.Canceled) && callCtx.Err() == nil && h.draining.Err() != nil {
		return nil, errShuttingDown
	}
	if err != nil || len(list) == 0 {
		return &pb.ReadyResponse{}, err
	}
	resp := &pb.ReadyResponse{Instances: make([]*pb.Instance, len(list))}
	for i := range list {
		resp.Instances[i] = instanceToProto(&list[i], nil)
	}
	resp.Instance, resp.Lease = resp.Instances[0], resp.Instances[0].GetLease()
	return resp, nil
}

func transitionArgs(ctx context.Context, req *pb.TransitionRequest) (engine.TransitionArgs, error) {
	a := engine.TransitionArgs{
		Principal:  principal(ctx),
		ID:         req.GetId(),
		Token:      req.GetToken(),
		Transition: req.GetTransition(),
		Params:     req.GetParams(),
		RequestID:  req.GetRequestId(),
	}
	if err := errors.Join(checkNames("transition", req.GetTransition()), checkParamKeys("params", req.GetParams())); err != nil {
		return a, err
	}
	if req.GetDelay() != nil {
		d, err := durationArg("delay", req.GetDelay())
		if err != nil {
			return a, err
		}
		a.Delay = &d
	}
	return a, nil
}

func (h *handlers) Transition(ctx context.Context, req *pb.TransitionRequest) (*pb.TransitionResponse, error) {
	if err := h.mayWork(ctx, req.GetId()); err != nil {
		return nil, err
	}
	a, err := transitionArgs(ctx, req)
	if err != nil {
		return nil, err
	}
	in, err := h.eng.Transition(ctx, a)
	if err != nil {
		return nil, err
	}
	return &pb.TransitionResponse{Instance: instanceToProto(&in, nil)}, nil
}

func (h *handlers) TransitionBatch(ctx context.Context, req *pb.TransitionBatchRequest) (*pb.TransitionBatchResponse, error) {
	reqs := req.GetTransitions()
	if len(reqs) == 0 || len(reqs) > engine.MaxTransitionBatch {
		return nil, &fsm.InvalidError{Field: "transitions", Reason: fmt.Sprintf("must have between 1 and %d items", engine.MaxTransitionBatch)}
	}
	for _, n := range req.GetContinueNodes() {
		machine, _, _ := strings.Cut(n, "/")
		if err := auth.CheckMachine(ctx, machine); err != nil {
			return nil, err
		}
	}
	if err := checkNames("worker", req.GetWorker()); err != nil {
		return nil, err
	}
	batch := make([]engine.TransitionArgs, len(reqs))
	bad := make([]error, len(reqs))
	for i, r := range reqs {
		batch[i], bad[i] = transitionArgs(ctx, r)
		if bad[i] == nil {
			// A worker restricted to some machines reports only on those.
			bad[i] = h.mayWork(ctx, r.GetId())
		}
		if bad[i] != nil {
			// Fails in the engine too, without touching the store.
			batch[i].Token = 0
		}
	}
	results, err := h.eng.TransitionBatch(ctx, batch, engine.Continuation{Worker: req.GetWorker(), Principal: principal(ctx), Nodes: req.GetContinueNodes(), Refill: req.GetRefill()})
	if err != nil {
		return nil, err
	}
	resp := &pb.TransitionBatchResponse{Results: make([]*pb.TransitionResult, len(results))}
	for i, r := range results {
		if bad[i] != nil {
			r.Err = bad[i]
		}
		out := &pb.TransitionResult{}
		if r.Err != nil {
			st := status.Convert(toStatus(h.log, pb.WorkService_TransitionBatch_FullMethodName, r.Err))
			out.Code, out.Message = int32(st.Code()), st.Message()
		} else {
			out.Instance = instanceToProto(&r.Instance, nil)
		}
		if r.Continued {
			out.Next = instanceToProto(&r.Next, nil)
		}
		resp.Results[i] = out
	}
	return resp, nil
}

func (h *handlers) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	if err := h.mayWork(ctx, req.GetId()); err != nil {
		return nil, err
	}
	exp, err := h.eng.Heartbeat(ctx, req.GetId(), req.GetToken(), principal(ctx))
	if err != nil {
		return nil, err
	}
	return &pb.HeartbeatResponse{ExpireTime: ts(exp)}, nil
}

func (h *handlers) Relinquish(ctx context.Context, req *pb.RelinquishRequest) (*pb.RelinquishResponse, error) {
	if err := h.mayWork(ctx, req.GetId()); err != nil {
		return nil, err
	}
	in, err := h.eng.Relinquish(ctx, req.GetId(), req.GetToken(), principal(ctx))
	if err != nil {
		return nil, err
	}
	return &pb.RelinquishResponse{Instance: instanceToProto(&in, nil)}, nil
}

func (h *handlers) Changes(req *pb.ChangesRequest, stream grpc.ServerStreamingServer[pb.ChangesResponse]) error {
	if err := checkNames("device", req.GetDevice()); err != nil {
		return err
	}
	if n := len(req.GetDevice()); n > engine.MaxIDBytes {
		return &fsm.InvalidError{Field: "device", Reason: fmt.Sprintf("is %d bytes long; the limit is %d", n, engine.MaxIDBytes)}
	}
	f := changes.Filter{Machine: req.GetMachine(), Instance: req.GetInstance(), Device: req.GetDevice()}
	opts := []changes.StreamOption{changes.OnRegistered(func(head uint64) error {
		// The headers tell the client the stream is registered (nothing
		// committed later is missed) and the head at that instant.
		return stream.SendHeader(metadata.Pairs("dfsmr-head-seq", strconv.FormatUint(head, 10)))
	})}
	if req.GetStopAtHead() {
		opts = append(opts, changes.StopAtHead())
	}
	return h.hub.Stream(stream.Context(), req.GetFromSeq(), f, func(c fsm.Change) error {
		return stream.Send(&pb.ChangesResponse{Change: changeToProto(&c)})
	}, opts...)
}
