package server_test

import (
	"context"
	"errors"
	"io"
	"testing"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
)

// TestProgressReportsWriteNothing: a printer's progress reports are
// answered without a store update, and ListDevices shows their progress
// and seq at once.
func TestProgressReportsWriteNothing(t *testing.T) {
	env := mustServer(t, server.Config{MetricsAddr: "127.0.0.1:0"})
	p := newPrinter(t, env, "p1", "lab")
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "cube", Quantity: 1, Printer: "p1"})
	print := p.pushed()
	wantCmd(t, print, "print", "o-1")
	wantNoCmd(t, p.carry(print))
	ops := env.srv.StoreStats().Ops
	before := mustScrape(t, env)
	for _, progress := range []float64{0.25, 0.5, 0.75} {
		p.state.Progress = progress
		wantNoCmd(t, p.report())
	}
	if got := env.srv.StoreStats().Ops - ops; got != 0 {
		t.Fatalf("3 progress reports made %d store updates, want 0", got)
	}
	after := mustScrape(t, env)
	quiet := after.must(t, "dfsmr_device_rounds_quiet_total") - before.must(t, "dfsmr_device_rounds_quiet_total")
	written := after.must(t, "dfsmr_device_rounds_written_total") - before.must(t, "dfsmr_device_rounds_written_total")
	if quiet != 3 || written != 0 {
		t.Fatalf("device rounds: %v quiet, %v written; want 3 quiet, 0 written", quiet, written)
	}
	if age, ok := after.value("dfsmr_device_last_seen_oldest_seconds"); !ok || age < 0 || age > 60 {
		t.Fatalf("dfsmr_device_last_seen_oldest_seconds = %v, %v", age, ok)
	}
	d := deviceOf(t, env, "p1")
	if d.GetProgress() != 0.75 || d.GetReportSeq() != 5 || d.GetNode() != "printing" {
		t.Fatalf("listed %v, want printing at 0.75 after report 5", d)
	}
}

// TestChangesByDevice: the device filter keeps a device's own changes and
// its jobs', and nothing of another printer.
func TestChangesByDevice(t *testing.T) {
	env := mustServer(t, server.Config{})
	p1 := newPrinter(t, env, "p1", "lab")
	wantNoCmd(t, p1.connect())
	p2 := newPrinter(t, env, "p2", "other")
	wantNoCmd(t, p2.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "a", Model: "cube", Quantity: 1, Printer: "p1"})
	order(t, env, &pb.SubmitOrderRequest{OrderId: "b", Model: "cube", Quantity: 1, Printer: "p2"})
	wantCmd(t, p1.pushed(), "print", "a-1")
	wantCmd(t, p2.pushed(), "print", "b-1")

	byDevice := func(id string) []*pb.Change {
		t.Helper()
		stream, err := env.changes.Changes(context.Background(), &pb.ChangesRequest{FromSeq: 1, StopAtHead: true, Device: id})
		if err != nil {
			t.Fatal(err)
		}
		var out []*pb.Change
		for {
			r, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return out
			}
			if err != nil {
				t.Fatalf("Changes(device %q): %v", id, err)
			}
			out = append(out, r.GetChange())
		}
	}
	want := map[string]int{}
	for _, c := range allChanges(t, env) {
		want[c.GetDevice()]++
	}
	for _, id := range []string{"p1", "p2"} {
		got := byDevice(id)
		if len(got) != want[id] || len(got) < 4 { // online, job started, dispatched, command
			t.Fatalf("Changes(device %q): %d changes, want %d (at least 4)", id, len(got), want[id])
		}
		kinds := map[pb.ChangeKind]bool{}
		for _, c := range got {
			if c.GetDevice() != id {
				t.Fatalf("Changes(device %q) sent %v", id, c)
			}
			kinds[c.GetKind()] = true
		}
		for _, k := range []pb.ChangeKind{pb.ChangeKind_CHANGE_KIND_DEVICE_ONLINE, pb.ChangeKind_CHANGE_KIND_STARTED, pb.ChangeKind_CHANGE_KIND_DEVICE_COMMAND} {
			if !kinds[k] {
				t.Fatalf("Changes(device %q) lacks a %v change: %v", id, k, got)
			}
		}
	}
	if got := byDevice("nobody"); len(got) != 0 {
		t.Fatalf("Changes(device nobody) = %v, want none", got)
	}
	stream, err := env.changes.Changes(context.Background(), &pb.ChangesRequest{FromSeq: 1, Device: "p\x1b1"})
	if err == nil {
		_, err = stream.Recv()
	}
	wantField(t, err, "device")
}
