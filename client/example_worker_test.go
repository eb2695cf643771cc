package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
)

// thumbnailYAML is a one-step machine with quick retries, for the examples.
const thumbnailYAML = `id: thumbnail
nodes:
  resize:
    start: true
    timeout: 10s
    retry: {max_attempts: 3, backoff: fixed, initial: 10ms, jitter: 0}
    transitions:
      ok: done
      error: resize
      throttled: {to: resize, delay: 1h}
  done: {final: true}
`

// exampleServer starts a server in a temporary directory with the
// thumbnail machine defined, and returns a client and a cleanup function.
func exampleServer() (*client.Client, func()) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "dfsmr-example")
	if err != nil {
		log.Fatal(err)
	}
	srv, err := server.New(ctx, server.Config{
		Addr: "127.0.0.1:0", DB: filepath.Join(dir, "dfsmr.db"), NoBundled: true,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(ctx, nil); err != nil {
		log.Fatal(err)
	}
	c, err := client.Dial(srv.Addr())
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Machines.DefineMachine(ctx, &pb.DefineMachineRequest{Source: thumbnailYAML}); err != nil {
		log.Fatal(err)
	}
	return c, func() {
		c.Close()
		srv.Stop(ctx)
		os.RemoveAll(dir)
	}
}

// waitFinal follows the changelog of machine until n of its instances are
// FINAL.
func waitFinal(ctx context.Context, c *client.Client, machine string, n int) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errDone := errors.New("done")
	err := c.Follow(ctx, &pb.ChangesRequest{FromSeq: 1, Machine: machine}, func(ch *pb.Change) error {
		if ch.GetToStatus() == pb.InstanceStatus_INSTANCE_STATUS_FINAL {
			n--
		}
		if n == 0 {
			return errDone
		}
		return nil
	})
	if !errors.Is(err, errDone) {
		log.Fatal(err)
	}
}

// A Worker runs a handler per machine and node. A handler's error becomes
// the node's "error" transition, with the error text in the "error" param,
// and the server retries that item alone with the node's backoff.
func ExampleWorker() {
	c, cleanup := exampleServer()
	defer cleanup()
	ctx := context.Background()
	for _, id := range []string{"img-1", "img-2", "img-3"} {
		if _, err := c.Instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "thumbnail"}); err != nil {
			log.Fatal(err)
		}
	}

	w := client.NewWorker(c, client.WorkerOptions{Name: "example", Concurrency: 4, Logger: slog.New(slog.DiscardHandler)})
	w.Handle("thumbnail", "resize", func(ctx context.Context, in *pb.Instance) (client.Result, error) {
		// img-2 fails on its first attempt only.
		if in.GetId() == "img-2" && in.GetAttempt() == 1 {
			return client.Result{}, errors.New("disk full")
		}
		return client.Result{Transition: "ok", Params: map[string]string{"size": "128x128"}}, nil
	})
	if err := w.Start(ctx); err != nil {
		log.Fatal(err)
	}
	waitFinal(ctx, c, "thumbnail", 3)
	if err := w.Stop(ctx); err != nil {
		log.Fatal(err)
	}

	for _, id := range []string{"img-1", "img-2", "img-3"} {
		got, err := c.Instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: id})
		if err != nil {
			log.Fatal(err)
		}
		in := got.GetInstance()
		fmt.Printf("%s: %s, size %s, last error %q\n",
			in.GetId(), in.GetNode(), in.GetParams()["size"], in.GetParams()["error"])
	}
	st := w.Stats()
	fmt.Println("leased", st.Leased, "reported", st.Reported, "failed", st.Failed)

	// Output:
	// img-1: done, size 128x128, last error ""
	// img-2: done, size 128x128, last error "disk full"
	// img-3: done, size 128x128, last error ""
	// leased 4 reported 4 failed 1
}

// A handler that is told to slow down (an HTTP 429 with Retry-After)
// returns a delayed transition with the server's delay: only that item
// waits, and the worker goes on with the others.
func ExampleResult_retryAfter() {
	c, cleanup := exampleServer()
	defer cleanup()
	ctx := context.Background()
	for _, id := range []string{"img-1", "img-2"} {
		if _, err := c.Instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "thumbnail"}); err != nil {
			log.Fatal(err)
		}
	}
	var (
		mu    sync.Mutex
		order []string
	)
	w := client.NewWorker(c, client.WorkerOptions{Name: "example", Logger: slog.New(slog.DiscardHandler)})
	w.Handle("thumbnail", "resize", func(ctx context.Context, in *pb.Instance) (client.Result, error) {
		if in.GetId() == "img-1" && in.GetParams()["throttled"] == "" {
			// Retry-After: 50ms overrides the definition's delay of 1h.
			return client.Result{Transition: "throttled", Delay: 50 * time.Millisecond, Params: map[string]string{"throttled": "yes"}}, nil
		}
		mu.Lock()
		order = append(order, in.GetId())
		mu.Unlock()
		return client.Result{Transition: "ok"}, nil
	})
	if err := w.Start(ctx); err != nil {
		log.Fatal(err)
	}
	waitFinal(ctx, c, "thumbnail", 2)
	if err := w.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("resized:", order)

	// Output:
	// resized: [img-2 img-1]
}
