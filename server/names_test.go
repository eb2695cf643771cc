package server_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
)

// unfitNames are names that would rewrite an operator's terminal: an ESC
// sequence, other C0/C1 controls, and each kind of bidirectional control.
var unfitNames = map[string]string{
	"esc":      "job\x1b[2Kfake",
	"nul":      "a\x00b",
	"newline":  "a\nb",
	"del":      "a\x7fb",
	"c1":       "a\u0085b",
	"override": "abc\u202Egpj.exe",
	"isolate":  "a\u2066b",
	"mark":     "a\u200Fb",
	"arabic":   "a\u061Cb",
}

// TestUnfitNamesAreInvalidArgument sends every unfit name in every field
// that holds a name and wants INVALID_ARGUMENT naming that field, with
// nothing stored.
func TestUnfitNamesAreInvalidArgument(t *testing.T) {
	env := mustServer(t, server.Config{})
	ctx := context.Background()
	devices := pb.NewDeviceServiceClient(env.conn)
	for name, bad := range unfitNames {
		t.Run(name, func(t *testing.T) {
			_, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: bad, Machine: "report"})
			wantViolation(t, err, "id")
			_, err = env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Machine: "report", Params: map[string]string{bad: "v"}})
			wantViolation(t, err, "params["+quoteKey(bad)+"]")
			_, err = env.instances.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: "x", Signal: bad})
			wantViolation(t, err, "signal")
			_, err = env.instances.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: "x", Signal: "retrieved", Params: map[string]string{bad: "v"}})
			wantViolation(t, err, "params["+quoteKey(bad)+"]")
			_, err = env.work.Ready(ctx, &pb.ReadyRequest{Worker: bad})
			wantViolation(t, err, "worker")
			_, err = env.work.Transition(ctx, &pb.TransitionRequest{Id: "x", Token: 1, Transition: bad})
			wantViolation(t, err, "transition")
			_, err = env.work.Transition(ctx, &pb.TransitionRequest{Id: "x", Token: 1, Transition: "ok", Params: map[string]string{bad: "v"}})
			wantViolation(t, err, "params["+quoteKey(bad)+"]")
			_, err = env.work.TransitionBatch(ctx, &pb.TransitionBatchRequest{Worker: bad, Transitions: []*pb.TransitionRequest{{Id: "x", Token: 1, Transition: "ok"}}})
			wantViolation(t, err, "worker")
			_, err = devices.SubmitOrder(ctx, &pb.SubmitOrderRequest{OrderId: bad, Model: "m", Quantity: 1, Pool: "p"})
			wantViolation(t, err, "order_id")
			_, err = devices.SubmitOrder(ctx, &pb.SubmitOrderRequest{Model: "m", Quantity: 1, Pool: bad})
			wantViolation(t, err, "pool")

			c, err := client.Dial(env.srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for field, reg := range map[string]*pb.DeviceRegistration{
				"register.device_id": {DeviceId: bad, Pool: "p"},
				"register.pool":      {DeviceId: "printer-1", Pool: bad},
			} {
				dev, err := c.ConnectDevice(ctx, reg, client.DeviceState{Node: "ready"})
				if err == nil {
					_, err = dev.Recv()
					dev.Close()
				}
				wantViolation(t, err, field)
			}
		})
	}
	// Nothing was stored: no instance, no device.
	list, err := env.instances.ListInstances(ctx, &pb.ListInstancesRequest{})
	if err != nil || len(list.GetInstances()) != 0 {
		t.Fatalf("instances after refused starts: %v, %v", list, err)
	}
	devs, err := devices.ListDevices(ctx, &pb.ListDevicesRequest{})
	if err != nil || len(devs.GetDevices()) != 0 {
		t.Fatalf("devices after refused registrations: %v, %v", devs, err)
	}
	// Param values are data: an ESC in one is stored as given.
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "ok-id", Machine: "report", Params: map[string]string{"note": "a\x1b[31mb"}}); err != nil {
		t.Fatalf("an ESC in a param value: %v", err)
	}
}

// quoteKey is how a violation names a param key: Go-quoted, ASCII only.
func quoteKey(k string) string { return strconv.QuoteToASCII(k) }
