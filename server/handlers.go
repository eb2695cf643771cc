package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
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
	"google.golang.org/protobuf/types/known/durationpb"
)

// Page sizes of the List RPCs.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// handlers translate between the proto API and the engine. They hold no
// state of their own.
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

// pageArgs reads a List request's page size (default DefaultPageSize,
// capped at MaxPageSize) and page token. Page tokens are the last id of the
// previous page, opaque to clients.
func pageArgs(size int32, token string) (n int, after string, err error) {
	switch {
	case size < 0:
		return 0, "", &fsm.InvalidError{Field: "page_size", Reason: "must not be negative"}
	case size == 0:
		n = DefaultPageSize
	default:
		n = min(int(size), MaxPageSize)
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return 0, "", &fsm.InvalidError{Field: "page_token", Reason: "is not a token returned by this server"}
	}
	return n, string(b), nil
}

// page trims a list fetched with limit n+1 to n and returns the token of
// the next page, empty on the last one.
func page[T any](list []T, n int, id func(T) string) ([]T, string) {
	if len(list) <= n {
		return list, ""
	}
	list = list[:n]
	return list, encodePageToken(id(list[n-1]))
}

func encodePageToken(last string) string { return base64.RawURLEncoding.EncodeToString([]byte(last)) }

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
	return &pb.GetMachineResponse{Machine: machineToProto(info), Versions: versions, Breaker: breakerToProto(info.Breaker)}, nil
}

func (h *handlers) ListMachines(ctx context.Context, req *pb.ListMachinesRequest) (*pb.ListMachinesResponse, error) {
	n, after, err := pageArgs(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	list, err := h.eng.ListMachines(ctx, after, n+1)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListMachinesResponse{}
	list, resp.NextPageToken = page(list, n, func(m engine.MachineInfo) string { return m.ID })
	for _, m := range list {
		resp.Machines = append(resp.Machines, machineToProto(m))
	}
	return resp, nil
}

func (h *handlers) StartInstance(ctx context.Context, req *pb.StartInstanceRequest) (*pb.StartInstanceResponse, error) {
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
	in, hist, err := h.eng.GetInstance(ctx, req.GetId(), req.GetIncludeHistory())
	if err != nil {
		return nil, err
	}
	return &pb.GetInstanceResponse{Instance: instanceToProto(&in, hist)}, nil
}

func (h *handlers) ListInstances(ctx context.Context, req *pb.ListInstancesRequest) (*pb.ListInstancesResponse, error) {
	n, after, err := pageArgs(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if s := req.GetStatus(); s < 0 || s > pb.InstanceStatus_INSTANCE_STATUS_HELD {
		return nil, &fsm.InvalidError{Field: "status", Reason: "unknown status"}
	}
	f := store.InstanceFilter{Machine: req.GetMachine(), Node: req.GetNode(), Status: fsm.Status(req.GetStatus())}
	list, err := h.eng.ListInstances(ctx, f, after, n+1)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListInstancesResponse{}
	list, resp.NextPageToken = page(list, n, func(in fsm.Instance) string { return in.ID })
	for i := range list {
		resp.Instances = append(resp.Instances, instanceToProto(&list[i], nil))
	}
	return resp, nil
}

func (h *handlers) SignalInstance(ctx context.Context, req *pb.SignalInstanceRequest) (*pb.SignalInstanceResponse, error) {
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
	in, _, err := h.eng.GetInstance(ctx, id, false)
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
	f := changes.Filter{Machine: req.GetMachine(), Instance: req.GetInstance()}
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
