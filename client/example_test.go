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

// This example runs a server in-process (the bundled machines, such as
// report, are defined at start), then plays both roles: a client starts an
// instance, and a worker leases it and reports that the download went well.
func ExampleDial() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "dfsmr-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	srv, err := server.New(ctx, server.Config{
		Addr:   "127.0.0.1:0",
		DB:     filepath.Join(dir, "dfsmr.db"),
		Logger: slog.New(slog.DiscardHandler),
	})
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

	// A client starts one item of a report pipeline. The id makes the call
	// idempotent: retrying it never starts a second item.
	started, err := c.Instances.StartInstance(ctx, &pb.StartInstanceRequest{
		Id:      "item-1",
		Machine: "report",
		Params:  map[string]string{"url": "https://example.com/item-1"},
	})
	if err != nil {
		log.Fatal(err)
	}
	in := started.GetInstance()
	fmt.Println("started:", in.GetId(), in.GetNode(), in.GetStatus())

	// A worker leases the next piece of work of the report machine.
	ready, err := c.Work.Ready(ctx, &pb.ReadyRequest{Worker: "example-worker", Machine: "report"})
	if err != nil {
		log.Fatal(err)
	}
	in = ready.GetInstance()
	fmt.Println("leased:", in.GetId(), in.GetNode(), in.GetStatus(), "by", ready.GetLease().GetWorker())

	// ... downloads in.Params["url"] ..., then reports the outcome with the
	// lease's fencing token.
	moved, err := c.Work.Transition(ctx, &pb.TransitionRequest{
		Id:         in.GetId(),
		Token:      ready.GetLease().GetToken(),
		Transition: "ok",
		Params:     map[string]string{"file": "/tmp/item-1"},
	})
	if err != nil {
		log.Fatal(err)
	}
	in = moved.GetInstance()
	fmt.Println("transitioned:", in.GetId(), in.GetNode(), in.GetStatus(), in.GetParams()["file"])

	// Output:
	// started: item-1 downloadable INSTANCE_STATUS_READY
	// leased: item-1 downloadable INSTANCE_STATUS_LEASED by example-worker
	// transitioned: item-1 uploadable INSTANCE_STATUS_READY /tmp/item-1
}
