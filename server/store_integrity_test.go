package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
)

// TestCorruptRecordIsDataLoss starts a server on a file in which one
// instance record has a flipped bit: the server starts (metrics on, so that
// their count at start reads every instance), GetInstance of that instance
// fails with DATA_LOSS naming the record, the others are served, listing
// fails cleanly without taking the server down, and the metric counts it.
func TestCorruptRecordIsDataLoss(t *testing.T) {
	ctx := t.Context()
	const secret = "payload-0123456789-abcdef"
	env := mustServer(t, server.Config{})
	for _, id := range []string{"a", "victim", "z"} {
		req := &pb.StartInstanceRequest{Id: id, Machine: "report"}
		if id == "victim" {
			req.Params = map[string]string{"p": secret}
		}
		if _, err := env.instances.StartInstance(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	env.stop(t)
	flipEvery(t, env.db, secret)

	again := mustServer(t, server.Config{DB: env.db, MetricsAddr: "127.0.0.1:0"})
	_, err := again.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "victim"})
	if status.Code(err) != codes.DataLoss || !strings.Contains(err.Error(), `instances/"victim"`) || !strings.Contains(err.Error(), env.db) {
		t.Fatalf("GetInstance of the damaged record: %v, want DATA_LOSS naming instances/\"victim\" in %s", err, env.db)
	}
	for _, id := range []string{"a", "z"} {
		if _, err := again.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: id}); err != nil {
			t.Fatalf("GetInstance %s: %v", id, err)
		}
	}
	if _, err := again.instances.ListInstances(ctx, &pb.ListInstancesRequest{}); status.Code(err) != codes.DataLoss {
		t.Errorf("ListInstances over the damaged record: %v, want DATA_LOSS", err)
	}
	h, err := healthpb.NewHealthClient(again.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after: %v %v", h, err)
	}
	if _, err := again.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "new", Machine: "report"}); err != nil {
		t.Fatalf("a write after: %v", err)
	}
	// At least: once by the check at start, once by the count of instances
	// at start, once each by GetInstance and ListInstances.
	if v, ok := mustScrape(t, again).value("dfsmr_store_corrupt_records_total"); !ok || v < 4 {
		t.Errorf("dfsmr_store_corrupt_records_total = %v (present %v), want >= 4", v, ok)
	}
}

// enospc fails the next n commits of a store as a full disk does.
type enospc struct{ left atomic.Int32 }

func (e *enospc) fault() error {
	if e.left.Add(-1) >= 0 {
		return &os.PathError{Op: "write", Path: "dfsmr.db", Err: syscall.ENOSPC}
	}
	return nil
}

// TestDiskFullIsUnavailable makes the store's commits fail with ENOSPC: a
// write fails with UNAVAILABLE saying why and that it is in the log, to be
// applied once there is room (and it then is), reads are served meanwhile, and a client.Worker whose transition meets
// the full disk retries it until it commits, without running its handler
// again.
func TestDiskFullIsUnavailable(t *testing.T) {
	ctx := t.Context()
	env := mustServer(t, server.Config{})
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "before", Machine: "report"}); err != nil {
		t.Fatal(err)
	}
	full := &enospc{}
	env.srv.Store().InjectCommitFault(full.fault)

	full.left.Store(1)
	_, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "during", Machine: "report"})
	want := "database " + env.db + ": commit: no space left on device; the write is in the log and is applied once that is resolved"
	if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != want {
		t.Fatalf("StartInstance on a full disk: %v, want UNAVAILABLE %q", err, want)
	}
	if _, err := env.instances.ListInstances(ctx, &pb.ListInstancesRequest{}); err != nil {
		t.Fatalf("a read on a full disk: %v", err)
	}
	// The next try to apply it finds room.
	for {
		_, err := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "during"})
		if err == nil {
			break
		}
		if status.Code(err) != codes.NotFound {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The handler's transition meets two failed commits.
	var calls atomic.Int32
	handled := make(chan struct{})
	w := client.NewWorker(client.New(env.conn), client.WorkerOptions{Name: "w", Concurrency: 1, Logger: slog.New(slog.DiscardHandler)})
	w.Handle("report", "downloadable", func(ctx context.Context, in *pb.Instance) (client.Result, error) {
		if calls.Add(1) == 1 {
			full.left.Store(2)
			close(handled)
		}
		return client.Result{Transition: "ok"}, nil
	})
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	<-handled
	if err := w.Stop(ctx); err != nil { // waits for the report
		t.Fatal(err)
	}
	got, err := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "before"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetInstance().GetNode() != "uploadable" || calls.Load() != 1 || full.left.Load() >= 0 {
		t.Fatalf("instance at %s after %d handler calls (%d faults left), want uploadable after 1 call with both faults used",
			got.GetInstance().GetNode(), calls.Load(), full.left.Load())
	}
	if st := w.Stats(); st.Reported != 1 {
		t.Errorf("worker stats %+v, want 1 reported", st)
	}
}

// TestReplacedFileRefusesWrites renames a copy of the database over the
// live file: writes fail with UNAVAILABLE saying so, reads go on.
func TestReplacedFileRefusesWrites(t *testing.T) {
	ctx := t.Context()
	env := mustServer(t, server.Config{})
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "before", Machine: "report"}); err != nil {
		t.Fatal(err)
	}
	copyPath := env.db + ".copy"
	if _, err := client.New(env.conn).Backup(ctx, copyPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(copyPath, env.db); err != nil {
		t.Fatal(err)
	}
	_, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "after", Machine: "report"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "replaced or removed") {
		t.Fatalf("a write after the file was replaced: %v, want UNAVAILABLE saying so", err)
	}
	if _, err := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "before"}); err != nil {
		t.Fatalf("a read after the file was replaced: %v", err)
	}
}

// TestCorruptDueRecordDoesNotStopOthers: a damaged record among instances
// that come due together is skipped by the scheduler; the others still
// become READY (a failing batch used to be retried forever, firing none).
func TestCorruptDueRecordDoesNotStopOthers(t *testing.T) {
	ctx := t.Context()
	const secret = "due-payload-0123456789-abcdef"
	env := mustServer(t, server.Config{})
	due := timestamppb.New(time.Now().Add(300 * time.Millisecond))
	for _, id := range []string{"a", "victim", "z"} {
		req := &pb.StartInstanceRequest{Id: id, Machine: "report", StartTime: due}
		if id == "victim" {
			req.Params = map[string]string{"p": secret}
		}
		if _, err := env.instances.StartInstance(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	env.stop(t)
	flipEvery(t, env.db, secret)

	again := mustServer(t, server.Config{DB: env.db})
	got := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < 2 && time.Now().Before(deadline) {
		resp, err := again.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "report", MaxCount: 3, Wait: durationpb.New(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range resp.GetInstances() {
			got[l.GetId()] = true
		}
	}
	if !got["a"] || !got["z"] || got["victim"] {
		t.Fatalf("leased %v, want a and z (victim is damaged)", got)
	}
}

// flipEvery flips one bit in every copy of secret in the file: the
// instance record, its changelog entry and stale copies in free pages.
func flipEvery(t *testing.T, path, secret string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte(secret))
		if j < 0 {
			break
		}
		b[i+j+3] ^= 0x01
		i += j + len(secret)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
