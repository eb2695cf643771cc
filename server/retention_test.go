package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/server"
)

// changesErr starts a Changes stream from from and returns the error that
// ends it before any change.
func changesErr(t *testing.T, env *testEnv, from uint64) error {
	t.Helper()
	stream, err := env.changes.Changes(context.Background(), &pb.ChangesRequest{FromSeq: from, StopAtHead: true})
	if err != nil {
		return err
	}
	for {
		c, err := stream.Recv()
		if err != nil {
			return err
		}
		t.Fatalf("from %d: got change %d, want an error", from, c.GetChange().GetSeq())
	}
}

// sweep runs a retention sweep. The server's own sweeper may have done
// the work already when the fake clock moved: whichever commits first,
// everything expired is gone once Sweep returns.
func sweep(t *testing.T, env *testEnv) {
	t.Helper()
	if _, err := env.srv.Engine().Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestChangesBelowRetentionOutOfRange: once retention deleted the first
// changes, a stream from before the oldest kept fails with OUT_OF_RANGE
// naming it (message and ErrorInfo metadata "oldest_seq"), and a stream
// from there works.
func TestChangesBelowRetentionOutOfRange(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	env := mustServer(t, server.Config{NoBundled: true, Clock: clk, ChangelogRetention: time.Hour})
	ctx := context.Background()
	define(t, env, orderYAML) // seq 1
	for i := range 3 {        // seqs 2..4
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprint("o-", i), Machine: "order"}); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(2 * time.Hour)
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "late", Machine: "order"}); err != nil { // seq 5
		t.Fatal(err)
	}
	sweep(t, env)

	st := wantCode(t, changesErr(t, env, 2), codes.OutOfRange)
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if info == nil || info.GetReason() != "CHANGES_COMPACTED" || info.GetMetadata()["oldest_seq"] != "5" {
		t.Fatalf("OUT_OF_RANGE details %v, want CHANGES_COMPACTED with oldest_seq 5", st.Details())
	}
	if want := "the oldest change kept is 5"; !strings.Contains(st.Message(), want) {
		t.Fatalf("message %q does not say %q", st.Message(), want)
	}
	// An instance's stream is refused the same way.
	stream, err := env.changes.Changes(ctx, &pb.ChangesRequest{FromSeq: 1, Instance: "o-1", StopAtHead: true})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.OutOfRange)

	stream, err = env.changes.Changes(ctx, &pb.ChangesRequest{FromSeq: 5, StopAtHead: true})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := stream.Recv(); err != nil || c.GetChange().GetSeq() != 5 || c.GetChange().GetInstance() != "late" {
		t.Fatalf("from the oldest kept: %v, %v", c, err)
	}
	// From the future: OUT_OF_RANGE without the detail.
	st = wantCode(t, changesErr(t, env, 7), codes.OutOfRange)
	if len(st.Details()) != 0 {
		t.Fatalf("from the future: details %v", st.Details())
	}
}

// TestFinishedRetentionDeletesInstances: the server's sweeper (on its
// clock, every minute) deletes an instance finished longer ago than
// finished_retention: GetInstance answers NOT_FOUND, the instance leaves
// dfsmr_instances, and dfsmr_retention_deleted_total counts it.
func TestFinishedRetentionDeletesInstances(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	env := mustServer(t, server.Config{NoBundled: true, Clock: clk, FinishedRetention: time.Hour, MetricsAddr: "127.0.0.1:0"})
	ctx := context.Background()
	define(t, env, orderYAML)
	for _, id := range []string{"done", "running"} {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "order"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.instances.CancelInstance(ctx, &pb.CancelInstanceRequest{Id: "done", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	sc := mustScrape(t, env)
	for _, kind := range []string{"changes", "instances"} {
		if v, ok := sc.value("dfsmr_retention_deleted_total", "kind="+kind); !ok || v != 0 {
			t.Fatalf("dfsmr_retention_deleted_total{kind=%q} = %v, %v before any sweep; want 0", kind, v, ok)
		}
	}
	if v, _ := sc.value("dfsmr_instances", "machine=order", "status=FINAL"); v != 1 {
		t.Fatalf("FINAL instances before = %v", v)
	}

	clk.Advance(30 * time.Minute)
	sweep(t, env)
	if _, err := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "done"}); err != nil {
		t.Fatalf("GetInstance within the retention: %v", err)
	}
	clk.Advance(31 * time.Minute)
	sweep(t, env)
	_, err := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "done"})
	wantCode(t, err, codes.NotFound)
	if _, err := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "running"}); err != nil {
		t.Fatalf("the running instance: %v", err)
	}
	sc = mustScrape(t, env)
	if v, _ := sc.value("dfsmr_retention_deleted_total", "kind=instances"); v != 1 {
		t.Fatalf("dfsmr_retention_deleted_total{kind=instances} = %v, want 1", v)
	}
	if v, ok := sc.value("dfsmr_instances", "machine=order", "status=FINAL"); ok && v != 0 {
		t.Fatalf("FINAL instances after the deletion = %v, want none", v)
	}
}

// TestRetentionSettingsValidated: a negative count is refused, naming the
// setting.
func TestRetentionSettingsValidated(t *testing.T) {
	err := server.Config{ChangelogRetentionCount: -1}.WithDefaults().Validate()
	if err == nil || !strings.Contains(err.Error(), "changelog_retention_count") {
		t.Fatalf("Validate: %v, want an error naming changelog_retention_count", err)
	}
	c := server.Config{}.WithDefaults()
	if c.ChangelogRetention != server.DefaultChangelogRetention || c.FinishedRetention != server.DefaultFinishedRetention {
		t.Fatalf("defaults: %v, %v", c.ChangelogRetention, c.FinishedRetention)
	}
	c = server.Config{ChangelogRetention: -1, FinishedRetention: -1}.WithDefaults()
	if c.ChangelogRetention != -1 || c.FinishedRetention != -1 || c.Validate() != nil {
		t.Fatalf("negative (keep for ever) kept as %v, %v: %v", c.ChangelogRetention, c.FinishedRetention, c.Validate())
	}
}
