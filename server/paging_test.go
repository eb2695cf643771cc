package server_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/protobuf/proto"
)

// bigParams is about the largest params map an instance may hold: 64
// values of 4000 bytes, about 256 KiB.
func bigParams(tag string) map[string]string {
	p := make(map[string]string, 64)
	for i := range 64 {
		p[fmt.Sprintf("k%02d", i)] = strings.Repeat(tag, 4000/len(tag))
	}
	return p
}

// mustBigInstances starts n instances of order with bigParams, o-000 on,
// and gives o-000 a history of 2*signals more changes as large.
func mustBigInstances(t *testing.T, env *testEnv, n, signals int) {
	t.Helper()
	ctx := context.Background()
	define(t, env, orderYAML)
	for i := range n {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprintf("o-%03d", i), Machine: "order", Params: bigParams(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range signals {
		for _, sig := range []string{"hold", "release"} {
			if _, err := env.instances.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: "o-000", Signal: sig, Params: bigParams(sig + fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// listAll pages through every instance with page_size 1000; every page
// must fit the client's default 4 MiB limit.
func listAll(t *testing.T, env *testEnv, req *pb.ListInstancesRequest) (ids []string, pages int) {
	t.Helper()
	req = proto.Clone(req).(*pb.ListInstancesRequest)
	for {
		resp, err := env.instances.ListInstances(context.Background(), req)
		if err != nil {
			t.Fatalf("page %d: %v", pages+1, err)
		}
		if size := proto.Size(resp); size > server.MaxResponseBytes+64<<10 {
			t.Fatalf("page %d is %d bytes", pages+1, size)
		}
		pages++
		for _, in := range resp.GetInstances() {
			ids = append(ids, in.GetId())
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			return ids, pages
		}
	}
}

// historyAll pages through the history of id.
func historyAll(t *testing.T, env *testEnv, id string, pageSize int32) (changes []*pb.Change, pages int) {
	t.Helper()
	req := &pb.GetInstanceRequest{Id: id, IncludeHistory: true, HistoryPageSize: pageSize}
	for {
		resp, err := env.instances.GetInstance(context.Background(), req)
		if err != nil {
			t.Fatalf("history page %d: %v", pages+1, err)
		}
		if size := proto.Size(resp); size > server.MaxResponseBytes+300<<10 {
			t.Fatalf("history page %d is %d bytes", pages+1, size)
		}
		pages++
		changes = append(changes, resp.GetInstance().GetHistory()...)
		if req.HistoryPageToken = resp.GetNextHistoryPageToken(); req.HistoryPageToken == "" {
			return changes, pages
		}
	}
}

// TestPagesBoundedByBytes lists 40 instances of 256 KiB params (10 MiB)
// with page_size 1000 and reads a history of 81 changes as large: every
// response fits the client's default 4 MiB limit, pages end early with a
// token, and paging returns everything once, in order.
func TestPagesBoundedByBytes(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	const n, signals = 40, 40
	mustBigInstances(t, env, n, signals)

	ids, pages := listAll(t, env, &pb.ListInstancesRequest{PageSize: 1000})
	if len(ids) != n || pages < 3 {
		t.Fatalf("%d instances in %d pages, want %d in at least 3", len(ids), pages, n)
	}
	for i, id := range ids {
		if want := fmt.Sprintf("o-%03d", i); id != want {
			t.Fatalf("instance %d is %s, want %s", i, id, want)
		}
	}
	// A filter pages the same way.
	if ids, _ := listAll(t, env, &pb.ListInstancesRequest{PageSize: 1000, Machine: "order", Status: pb.InstanceStatus_INSTANCE_STATUS_READY}); len(ids) != n {
		t.Fatalf("filtered: %d instances, want %d", len(ids), n)
	}

	hist, pages := historyAll(t, env, "o-000", 0)
	if len(hist) != 1+2*signals || pages < 3 {
		t.Fatalf("history of %d changes in %d pages, want %d in at least 3", len(hist), pages, 1+2*signals)
	}
	for i := 1; i < len(hist); i++ {
		if hist[i].GetSeq() <= hist[i-1].GetSeq() {
			t.Fatalf("history out of order at %d: %d after %d", i, hist[i].GetSeq(), hist[i-1].GetSeq())
		}
	}
	// A page size smaller than the byte budget allows is kept.
	if hist, pages := historyAll(t, env, "o-000", 2); len(hist) != 1+2*signals || pages != (len(hist)+1)/2 {
		t.Fatalf("history by 2: %d changes in %d pages", len(hist), pages)
	}
}

// TestConcurrentBigReadsMemoryBounded has 16 readers page through 80
// instances of 256 KiB params (20 MiB) and a history as large, again and
// again, and checks the heap stays bounded: MaxConcurrentReads pages of
// MaxResponseBytes are built at once, plus the responses being sent.
// Without the byte budget each call held the whole 20 MiB three times over
// (records, protos, encoding): the same readers grew the heap by 737 MiB,
// and every call failed with RESOURCE_EXHAUSTED on the client.
func TestConcurrentBigReadsMemoryBounded(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	const n, signals = 80, 40
	mustBigInstances(t, env, n, signals)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		peak uint64
	)
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		mu.Lock()
		peak = max(peak, ms.HeapInuse)
		mu.Unlock()
	}
	const readers, rounds = 16, 2
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if r%2 == 0 {
					req := &pb.ListInstancesRequest{PageSize: 1000}
					for {
						resp, err := env.instances.ListInstances(context.Background(), req)
						if err != nil {
							t.Error(err)
							return
						}
						sample()
						if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
							break
						}
					}
					continue
				}
				req := &pb.GetInstanceRequest{Id: "o-000", IncludeHistory: true}
				for {
					resp, err := env.instances.GetInstance(context.Background(), req)
					if err != nil {
						t.Error(err)
						return
					}
					sample()
					if req.HistoryPageToken = resp.GetNextHistoryPageToken(); req.HistoryPageToken == "" {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	grew := int64(peak) - int64(before)
	t.Logf("heap in use: before %d MiB, peak %d MiB (+%d MiB) with %d readers of 20 MiB", before>>20, peak>>20, grew>>20, readers)
	// Live at most: 8 pages being built (a store chunk of 4 MiB and a page
	// of 3 MiB each), and per reader a response of 3 MiB encoded on the
	// server and received and decoded by the client (this process too):
	// about 200 MiB, and garbage on top until the collector runs (measured:
	// +244 MiB; without the bounds +737 MiB).
	if grew > 400<<20 {
		t.Fatalf("heap grew by %d MiB", grew>>20)
	}
}

// TestGarbagePageTokensAreInvalidArgument sends every paged RPC tokens it
// did not issue (valid base64 included, which decodes to some key), tokens
// of another list and tokens of other filters: INVALID_ARGUMENT naming the
// token field, never a page read from a made-up key.
func TestGarbagePageTokensAreInvalidArgument(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})
	ctx := context.Background()
	define(t, env, orderYAML)
	define(t, env, strings.Replace(orderYAML, "id: order", "id: other", 1))
	for _, id := range []string{"a", "b"} {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "order"}); err != nil {
			t.Fatal(err)
		}
		if _, err := env.instances.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: id, Signal: "hold"}); err != nil {
			t.Fatal(err)
		}
	}
	devices := pb.NewDeviceServiceClient(env.conn)
	listed, err := env.instances.ListInstances(ctx, &pb.ListInstancesRequest{Machine: "order", PageSize: 1})
	if err != nil || listed.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, token %q", err, listed.GetNextPageToken())
	}
	machines, err := env.machines.ListMachines(ctx, &pb.ListMachinesRequest{PageSize: 1})
	if err != nil || machines.GetNextPageToken() == "" {
		t.Fatalf("first machines page: %v, token %q", err, machines.GetNextPageToken())
	}
	hist, err := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "a", IncludeHistory: true, HistoryPageSize: 1})
	if err != nil || hist.GetNextHistoryPageToken() == "" {
		t.Fatalf("first history page: %v, token %q", err, hist.GetNextHistoryPageToken())
	}
	garbage := []string{"zzzz", "!!", "YQ", listed.GetNextPageToken() + "A", hist.GetNextHistoryPageToken()[1:]}
	for _, tok := range garbage {
		_, err := env.instances.ListInstances(ctx, &pb.ListInstancesRequest{PageToken: tok})
		wantViolation(t, err, "page_token")
		_, err = env.machines.ListMachines(ctx, &pb.ListMachinesRequest{PageToken: tok})
		wantViolation(t, err, "page_token")
		_, err = devices.ListDevices(ctx, &pb.ListDevicesRequest{PageToken: tok})
		wantViolation(t, err, "page_token")
		_, err = env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "a", IncludeHistory: true, HistoryPageToken: tok})
		wantViolation(t, err, "history_page_token")
	}
	// A token of another list, or of other filters, or another instance.
	_, err = env.instances.ListInstances(ctx, &pb.ListInstancesRequest{Machine: "order", PageToken: machines.GetNextPageToken()})
	wantViolation(t, err, "page_token")
	_, err = env.machines.ListMachines(ctx, &pb.ListMachinesRequest{PageToken: listed.GetNextPageToken()})
	wantViolation(t, err, "page_token")
	_, err = env.instances.ListInstances(ctx, &pb.ListInstancesRequest{Machine: "other", PageToken: listed.GetNextPageToken()})
	wantViolation(t, err, "page_token")
	_, err = env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "b", IncludeHistory: true, HistoryPageToken: hist.GetNextHistoryPageToken()})
	wantViolation(t, err, "history_page_token")
	// The tokens it issued work.
	next, err := env.instances.ListInstances(ctx, &pb.ListInstancesRequest{Machine: "order", PageSize: 1, PageToken: listed.GetNextPageToken()})
	if err != nil || len(next.GetInstances()) != 1 || next.GetInstances()[0].GetId() != "b" || next.GetNextPageToken() != "" {
		t.Fatalf("second page: %v, %v", next, err)
	}
	if _, err := env.instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: "a", IncludeHistory: true, HistoryPageToken: hist.GetNextHistoryPageToken()}); err != nil {
		t.Fatal(err)
	}
}
