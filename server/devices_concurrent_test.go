package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
)

// runPrinter is an autonomous printer: it carries out each command it gets
// (or refuses it when it no longer matches its state), prints at once and
// reports every move, until ctx ends. Its first error ends it.
func runPrinter(ctx context.Context, c *client.Client, id string) error {
	state := client.DeviceState{Node: "ready"}
	dev, err := c.ConnectDevice(ctx, &pb.DeviceRegistration{DeviceId: id, Pool: "lab"}, state)
	if err != nil {
		return err
	}
	var last uint64
	printed := map[string]bool{}
	report := func(s client.DeviceState) error {
		state = s
		_, err := dev.Report(s)
		return err
	}
	for {
		r, err := dev.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: %w", id, err)
		}
		cmd := r.GetCommand()
		if cmd == nil {
			continue
		}
		stale := cmd.GetSeq() <= last || cmd.GetNode() != state.Node ||
			(cmd.GetName() == "print" && printed[cmd.GetJobId()]) ||
			(cmd.GetName() != "print" && cmd.GetJobId() != state.Job)
		if stale {
			if _, err := dev.Reject(state, cmd.GetSeq(), "stale"); err != nil {
				return err
			}
			continue
		}
		last = cmd.GetSeq()
		switch cmd.GetName() {
		case "print":
			printed[cmd.GetJobId()] = true
			if err := report(client.DeviceState{Node: "printing", Job: cmd.GetJobId()}); err != nil {
				return err
			}
			if err := report(client.DeviceState{Node: "waiting_retrieval", Job: cmd.GetJobId(), Progress: 1}); err != nil {
				return err
			}
		case "done":
			if err := report(client.DeviceState{Node: "ready"}); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected command %v", id, cmd)
		}
	}
}

// TestDevicesConcurrently runs printers and an operator side by side: the
// server's own rounds (new jobs, signals) race with the printers' reports.
// Every job ends done, each printed on exactly one printer.
func TestDevicesConcurrently(t *testing.T) {
	env := mustServer(t, server.Config{})
	const printers, jobs = 4, 24
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, printers+1)
	for i := range printers {
		c := dialPrinter(t, env)
		wg.Go(func() { errs <- runPrinter(ctx, c, fmt.Sprintf("p%d", i)) })
	}
	waitFor(t, func() bool {
		resp, err := pb.NewDeviceServiceClient(env.conn).ListDevices(ctx, &pb.ListDevicesRequest{})
		return err == nil && len(resp.GetDevices()) == printers
	})
	// The operator takes every finished part off the bed.
	op := client.New(env.conn)
	wg.Go(func() {
		err := op.Follow(ctx, &pb.ChangesRequest{FromSeq: 1}, func(c *pb.Change) error {
			if c.GetKind() != pb.ChangeKind_CHANGE_KIND_DEVICE_NOTICE || !strings.HasPrefix(c.GetReason(), "print finished") {
				return nil
			}
			_, err := op.Instances.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: c.GetInstance(), Signal: "retrieved"})
			return err
		})
		if ctx.Err() != nil {
			err = nil
		}
		errs <- err
	})
	for i := range jobs / 4 {
		order(t, env, &pb.SubmitOrderRequest{OrderId: fmt.Sprint("o", i), Model: "m", Quantity: 4, Pool: "lab"})
	}
	waitFor(t, func() bool {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		default:
		}
		resp, err := env.instances.ListInstances(ctx, &pb.ListInstancesRequest{Machine: "print_job", Node: "done"})
		return err == nil && len(resp.GetInstances()) == jobs
	})
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}

	dispatchedTo := map[string]string{}
	for _, c := range allChanges(t, env) {
		if c.GetMachine() == "print_job" && c.GetTransition() == "dispatch" {
			if prev, dup := dispatchedTo[c.GetInstance()]; dup {
				t.Fatalf("job %s dispatched to %s and %s", c.GetInstance(), prev, c.GetDevice())
			}
			dispatchedTo[c.GetInstance()] = c.GetDevice()
		}
	}
	if len(dispatchedTo) != jobs {
		t.Fatalf("%d jobs dispatched, want %d", len(dispatchedTo), jobs)
	}
}
