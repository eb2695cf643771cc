package server

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/store/bolt"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// FuzzRequests feeds arbitrary request fields through the handlers and
// the engine's validation, over a real bbolt store: no request may panic
// or hang, and every refusal must map to a status a client can act on
// (never INTERNAL or UNKNOWN); INVALID_ARGUMENT carries the offending
// field.
func FuzzRequests(f *testing.F) {
	f.Add("i1", "report", "ok", "k", "v", uint64(1), int32(0), int64(0), int32(0), "", "w", "downloadable", "r1", int32(10), "reason")
	f.Add("", "", "", "", "", uint64(0), int32(-1), int64(-1), int32(-1), "!!", "", "", "", int32(-5), "")
	f.Add("i\x00", "report", "dfsmr.timeout", "\x7f", "\xff", uint64(1<<63), int32(1<<30), int64(315576000001), int32(1e9), "aQ", "w", "x", string(make([]byte, 300)), int32(7), string(make([]byte, 2000)))
	f.Add("i2", "report", "error", "k", "v", uint64(2), int32(5), int64(3), int32(5), "", "w", "", "r2", int32(2), "")

	st, err := bolt.Open(filepath.Join(f.TempDir(), "fuzz.db"), bolt.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	log := slog.New(slog.DiscardHandler)
	eng := engine.New(st, engine.Options{Clock: clk, Logger: log})
	for _, src := range machines.Bundled() {
		if _, _, err := eng.DefineMachine(context.Background(), src.File, src.Data, "fuzz"); err != nil {
			f.Fatal(err)
		}
	}
	h := &handlers{eng: eng, log: log, draining: context.Background()}

	f.Fuzz(func(t *testing.T, id, machine, name, key, value string, token uint64, priority int32, secs int64, nanos int32,
		pageToken, worker, node, requestID string, status int32, reason string) {
		ctx := context.Background()
		params := map[string]string{key: value}
		d := &durationpb.Duration{Seconds: secs, Nanos: nanos}
		check := func(method string, err error) {
			t.Helper()
			checkStatus(t, method, toStatus(log, method, err))
		}
		_, err := h.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: machine, Params: params, Priority: priority, StartDelay: d})
		check("StartInstance", err)
		_, err = h.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: machine, StartTime: &timestamppb.Timestamp{Seconds: secs, Nanos: nanos}})
		check("StartInstance", err)
		rctx, cancel := context.WithTimeout(ctx, time.Millisecond) // a valid wait blocks on the fake clock
		_, err = h.Ready(rctx, &pb.ReadyRequest{Worker: worker, Machine: machine, Node: node, Wait: d})
		cancel()
		check("Ready", err)
		_, err = h.Transition(ctx, &pb.TransitionRequest{Id: id, Token: token, Transition: name, Params: params, RequestId: requestID, Delay: d})
		check("Transition", err)
		_, err = h.Heartbeat(ctx, &pb.HeartbeatRequest{Id: id, Token: token})
		check("Heartbeat", err)
		_, err = h.Relinquish(ctx, &pb.RelinquishRequest{Id: id, Token: token})
		check("Relinquish", err)
		_, err = h.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: id, Signal: name, Params: params})
		check("SignalInstance", err)
		_, err = h.GetInstance(ctx, &pb.GetInstanceRequest{Id: id, IncludeHistory: true})
		check("GetInstance", err)
		_, err = h.ListInstances(ctx, &pb.ListInstancesRequest{Machine: machine, Node: node, Status: pb.InstanceStatus(status), PageSize: priority, PageToken: pageToken})
		check("ListInstances", err)
		_, err = h.GetMachine(ctx, &pb.GetMachineRequest{Id: machine, Version: uint32(token)})
		check("GetMachine", err)
		_, err = h.ListMachines(ctx, &pb.ListMachinesRequest{PageSize: priority, PageToken: pageToken})
		check("ListMachines", err)
		_, err = h.RetryInstance(ctx, &pb.RetryInstanceRequest{Id: id, Reason: reason})
		check("RetryInstance", err)
		expected := uint32(priority)
		_, err = h.RetryInstances(ctx, &pb.RetryInstancesRequest{Machine: machine, Node: node, All: token&2 != 0, DryRun: token&1 == 0, ExpectedCount: &expected, Reason: reason})
		check("RetryInstances", err)
		_, err = h.CancelInstances(ctx, &pb.CancelInstancesRequest{Machine: machine, Node: node, Status: pb.InstanceStatus(status), DryRun: token&1 == 0, Reason: reason})
		check("CancelInstances", err)
		_, err = h.CancelInstance(ctx, &pb.CancelInstanceRequest{Id: id, Reason: reason})
		check("CancelInstance", err)
	})
}

func checkStatus(t *testing.T, method string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Internal, codes.Unknown:
		t.Fatalf("%s: %v", method, err)
	case codes.InvalidArgument:
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 && br.GetFieldViolations()[0].GetField() != "" {
				return
			}
		}
		t.Fatalf("%s: INVALID_ARGUMENT without a field violation: %v", method, err)
	}
}
