package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
)

var flagCycles = flag.Int("cycles", 0, "kill -9 cycles of TestKill9KeepsAcknowledgedWrites; 0: 30, or 3 with -short")

func cycles() int {
	switch {
	case *flagCycles > 0:
		return *flagCycles
	case testing.Short():
		return 3
	}
	return 30
}

// childEnv makes the test binary run as dfsmrd: the crash test starts and
// kills the real server main, not an in-process imitation.
const childEnv = "DFSMRD_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

var servingRE = regexp.MustCompile(`msg=serving .*addr=(\S+)`)

// startChild runs dfsmrd on db and returns its address once it serves.
func startChild(t *testing.T, db string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "--addr", "127.0.0.1:0", "--db", db)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case a := <-addr:
		return cmd, a
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("dfsmrd did not start serving in 30s")
	}
	return nil, ""
}

// acked records what the load attempted and what the server acknowledged
// before it was killed.
type acked struct {
	mu          sync.Mutex
	starts      map[string]bool   // instance id
	transitions map[string]uint64 // instance id -> token of its acknowledged "ok"
	// Attempted calls, acknowledged or not.
	triedStarts, triedTransitions int
}

func TestKill9KeepsAcknowledgedWrites(t *testing.T) {
	db := filepath.Join(t.TempDir(), "dfsmr.db")
	a := &acked{starts: map[string]bool{}, transitions: map[string]uint64{}}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for cycle := range cycles() {
		cmd, addr := startChild(t, db)
		c, err := client.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		before := a.transitionCount()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				load(ctx, c, a, fmt.Sprintf("c%d-w%d", cycle, w))
			}()
		}
		// Kill at a random moment once this cycle's load has had a
		// transition acknowledged, so that every cycle crashes a server
		// with writes in flight however slow the machine is.
		a.waitTransitions(t, before+1)
		time.Sleep(time.Duration(rng.IntN(250)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		cmd.Wait()
		cancel()
		wg.Wait()
		c.Close()
	}
	cmd, addr := startChild(t, db)
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	c, err := client.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	verify(t, c, a)
}

func (a *acked) transitionCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.transitions)
}

// waitTransitions waits until n transitions were acknowledged in all.
func (a *acked) waitTransitions(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for a.transitionCount() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the load had %d transitions acknowledged after a minute, want %d", a.transitionCount(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// load starts report instances and moves them on, recording every
// acknowledged call, until the server dies.
func load(ctx context.Context, c *client.Client, a *acked, worker string) {
	for i := 0; ctx.Err() == nil; i++ {
		id := fmt.Sprintf("%s-%d", worker, i)
		a.mu.Lock()
		a.triedStarts++
		a.mu.Unlock()
		if _, err := c.Instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: id, Machine: "report"}); err != nil {
			return
		}
		a.mu.Lock()
		a.starts[id] = true
		a.mu.Unlock()
		r, err := c.Work.Ready(ctx, &pb.ReadyRequest{Worker: worker, Machine: "report", Node: "downloadable"})
		if err != nil {
			return
		}
		if r.GetLease() == nil {
			continue
		}
		lid, tok := r.GetInstance().GetId(), r.GetLease().GetToken()
		a.mu.Lock()
		a.triedTransitions++
		a.mu.Unlock()
		if _, err := c.Work.Transition(ctx, &pb.TransitionRequest{Id: lid, Token: tok, Transition: "ok"}); err != nil {
			return
		}
		a.mu.Lock()
		a.transitions[lid] = tok
		a.mu.Unlock()
	}
}

func verify(t *testing.T, c *client.Client, a *acked) {
	ctx := context.Background()
	if len(a.starts) == 0 || len(a.transitions) == 0 {
		t.Fatalf("the load acknowledged nothing (%d starts, %d transitions)", len(a.starts), len(a.transitions))
	}
	list, err := c.ListAllInstances(ctx, &pb.ListInstancesRequest{Machine: "report"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	present := map[string]*pb.Instance{}
	for _, in := range list {
		if present[in.GetId()] != nil {
			t.Errorf("instance %s listed twice", in.GetId())
		}
		present[in.GetId()] = in
	}
	lost := 0
	for id := range a.starts {
		if present[id] == nil {
			lost++
			t.Errorf("acknowledged start of %s lost", id)
		}
	}
	for id, tok := range a.transitions {
		g, err := c.Instances.GetInstance(ctx, &pb.GetInstanceRequest{Id: id, IncludeHistory: true})
		if err != nil {
			t.Fatalf("get %s: %v", id, err)
		}
		found := 0
		for _, h := range g.GetInstance().GetHistory() {
			if h.GetKind() == pb.ChangeKind_CHANGE_KIND_TRANSITIONED && h.GetToken() == tok && h.GetToNode() == "uploadable" {
				found++
			}
		}
		if found == 0 {
			lost++
		}
		if found != 1 {
			t.Errorf("acknowledged transition of %s (token %d) found %d times", id, tok, found)
		}
	}
	// The changelog is gap-free from 1; no instance started twice and no
	// lease token was consumed twice, acknowledged or not.
	var seqs []uint64
	startsOf := map[string]int{}
	type use struct {
		id    string
		token uint64
	}
	transitionsOf := map[use]int{}
	err = c.Follow(ctx, &pb.ChangesRequest{FromSeq: 1, StopAtHead: true}, func(ch *pb.Change) error {
		seqs = append(seqs, ch.GetSeq())
		switch ch.GetKind() {
		case pb.ChangeKind_CHANGE_KIND_STARTED:
			startsOf[ch.GetInstance()]++
		case pb.ChangeKind_CHANGE_KIND_TRANSITIONED:
			transitionsOf[use{ch.GetInstance(), ch.GetToken()}]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("changelog gap: position %d holds seq %d", i, s)
		}
	}
	duplicated := 0
	for id, n := range startsOf {
		if n > 1 {
			duplicated++
			t.Errorf("instance %s started %d times", id, n)
		}
	}
	for u, n := range transitionsOf {
		if n > 1 {
			duplicated++
			t.Errorf("instance %s transitioned %d times under token %d", u.id, n, u.token)
		}
	}
	if len(startsOf) != len(list) {
		t.Errorf("the changelog started %d instances, %d are listed", len(startsOf), len(list))
	}
	t.Logf("%d cycles: starts %d attempted, %d acknowledged; transitions %d attempted, %d acknowledged; "+
		"%d instances, %d transitions stored; lost %d, duplicated %d; changelog 1..%d gap-free",
		cycles(), a.triedStarts, len(a.starts), a.triedTransitions, len(a.transitions),
		len(list), len(transitionsOf), lost, duplicated, len(seqs))
}
