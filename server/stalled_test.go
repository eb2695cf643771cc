package server_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// stalledReader opens a Changes stream on a connection of its own with
// fixed 64 KiB flow-control windows, waits until it is registered, and
// never reads: the server's Send blocks once the windows are full.
func stalledReader(t *testing.T, env *testEnv) pb.ChangesService_ChangesClient {
	t.Helper()
	conn, err := grpc.NewClient(env.srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	st, err := pb.NewChangesServiceClient(conn).Changes(t.Context(), &pb.ChangesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Header(); err != nil {
		t.Fatal(err)
	}
	return st
}

// startMany starts n report instances with 2 KiB params from 8 clients at
// once, under ids prefix-i.
func startMany(t *testing.T, env *testEnv, prefix string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				_, err := env.instances.StartInstance(context.Background(), &pb.StartInstanceRequest{
					Id: fmt.Sprintf("%s-%d", prefix, i), Machine: "report", Params: map[string]string{"pad": strings.Repeat("x", 2048)},
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestStalledChangesReaderEnded has a client open Changes and stop
// reading while 1,300 changes commit: the server ends the stream as soon
// as the watcher is 1,024 changes behind, although its Send is blocked on
// flow control, counts it as lagged, and the client, reading at last, gets
// ABORTED with the resume point. Another stalled reader does not hold a
// graceful stop: Stop returns long before its StopTimeout.
func TestStalledChangesReaderEnded(t *testing.T) {
	env := mustServer(t, server.Config{StopTimeout: time.Minute})
	lagging := stalledReader(t, env)
	startMany(t, env, "a", 1300)
	// Publish ends the stream as it marks it lagging, before the writes
	// return: no waiting for a Send that never returns.
	if n := env.srv.ChangesLagged(); n != 1 {
		t.Fatalf("lagged streams: %d, want 1", n)
	}

	stalled := stalledReader(t, env)
	startMany(t, env, "b", 200) // enough to block its Send, not to lag

	var last uint64
	for {
		resp, err := lagging.Recv()
		if err == nil {
			last = resp.GetChange().GetSeq()
			continue
		}
		st := wantCode(t, err, codes.Aborted)
		var resume string
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				resume = info.GetMetadata()["resume_from_seq"]
			}
		}
		if from, err := strconv.ParseUint(resume, 10, 64); err != nil || from == 0 || from > last+1 {
			t.Fatalf("resume_from_seq %q after seq %d", resume, last)
		}
		break
	}

	begin := time.Now()
	if err := env.srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 20*time.Second {
		t.Fatalf("Stop took %s with a stalled reader", took)
	} else {
		t.Logf("Stop took %s with a stalled reader", took)
	}
	for {
		if _, err := stalled.Recv(); err != nil {
			if c := status.Code(err); c != codes.Unavailable {
				t.Fatalf("stalled reader after Stop: %v", err)
			}
			break
		}
	}
}
