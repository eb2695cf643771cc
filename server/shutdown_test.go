package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestGracefulStopLosesNoAcknowledgedWrite stops the server while 16
// clients start instances, then reopens the file: every start the server
// acknowledged is there, and every refused call was refused with a status
// that tells the client to retry elsewhere.
func TestGracefulStopLosesNoAcknowledgedWrite(t *testing.T) {
	env := mustServer(t, server.Config{})
	ctx := context.Background()
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	started := make(chan struct{}, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				_, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "report"})
				if err != nil {
					if c := status.Code(err); c != codes.Unavailable {
						t.Errorf("start during stop: %v (want UNAVAILABLE)", err)
					}
					return
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
				if i == 10 {
					started <- struct{}{}
				}
			}
		}()
	}
	for range 16 {
		<-started
	}
	if err := env.srv.Stop(ctx); err != nil { // the client stays connected
		t.Fatal(err)
	}
	wg.Wait()

	again := mustServer(t, server.Config{DB: env.db})
	for _, id := range acked {
		if _, err := again.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: id}); err != nil {
			t.Fatalf("acknowledged start %s lost across a graceful stop: %v", id, err)
		}
	}
	t.Logf("%d acknowledged starts, all present after restart", len(acked))
}
