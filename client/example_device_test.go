package client_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
)

// This example connects a printer, orders a part for it, and plays the
// printer's side of the reactive loop: the server pushes the print at once,
// the printer reports each of its moves, and an operator's "retrieved"
// brings the done command.
func ExampleClient_ConnectDevice() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "dfsmr-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	srv, err := server.New(ctx, server.Config{Addr: "127.0.0.1:0", DB: filepath.Join(dir, "dfsmr.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(ctx, nil); err != nil {
		log.Fatal(err)
	}
	defer srv.Stop(ctx)
	c, err := client.Dial(srv.Addr())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// The printer registers, ready; the answer to its first report carries
	// no command: its queue is empty.
	dev, err := c.ConnectDevice(ctx, &pb.DeviceRegistration{DeviceId: "printer-1", Pool: "lab"}, client.DeviceState{Node: "ready"})
	if err != nil {
		log.Fatal(err)
	}
	next := func() *pb.ConnectResponse {
		r, err := dev.Recv()
		if err != nil {
			log.Fatal(err)
		}
		return r
	}
	fmt.Println("answer to report", next().GetReportSeq())

	// An order for the pool: the ready printer gets the job at once.
	if _, err := c.Devices.SubmitOrder(ctx, &pb.SubmitOrderRequest{OrderId: "o", Model: "benchy", Quantity: 1, Pool: "lab"}); err != nil {
		log.Fatal(err)
	}
	cmd := next().GetCommand()
	fmt.Println("command:", cmd.GetName(), cmd.GetJobId(), cmd.GetParams()["model"])

	// The printer prints, then waits for the part to be taken off.
	for _, node := range []string{"printing", "waiting_retrieval"} {
		if _, err := dev.Report(client.DeviceState{Node: node, Job: cmd.GetJobId()}); err != nil {
			log.Fatal(err)
		}
		fmt.Println(node, "answered with a command:", next().GetCommand() != nil)
	}
	if _, err := c.Instances.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: cmd.GetJobId(), Signal: "retrieved"}); err != nil {
		log.Fatal(err)
	}
	cmd = next().GetCommand()
	fmt.Println("command:", cmd.GetName(), cmd.GetJobId())

	// Goodbye: the server marks the printer offline, then ends the stream.
	if err := dev.Close(); err != nil {
		log.Fatal(err)
	}
	_, err = dev.Recv()
	fmt.Println("stream ended:", err)

	// Output:
	// answer to report 1
	// command: print o-1 benchy
	// printing answered with a command: false
	// waiting_retrieval answered with a command: false
	// command: done o-1
	// stream ended: EOF
}
