package cluster_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/cluster"
)

var flagSeed = flag.Uint64("cluster.seed", 0, "seed of TestLeaderCrashesKeepTheLog's choices; 0: from the clock")

// TestLeaderCrashesKeepTheLog proposes from several goroutines while the
// leader is shut down and restarted again and again, then checks what the
// errors promised: every acknowledged proposal is in the log once, no
// proposal refused as not appended (not the leader, shut down) is in it,
// one of unknown outcome at most once, and every node applied the same
// log. The logged seed picks when each leader stops (-cluster.seed); the
// goroutines' and the network's timing is not reproducible.
func TestLeaderCrashesKeepTheLog(t *testing.T) {
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	h := newHarness(t)
	var mu sync.Mutex // guards nodes
	nodes := map[string]*testNode{}
	nodes["n1"] = h.open("n1", "", t.TempDir(), newMemSM(), func(c *cluster.Config) { c.Bootstrap = true })
	h.waitLeader()
	for _, id := range []string{"n2", "n3"} {
		nodes[id] = h.open(id, "", t.TempDir(), newMemSM(), nil)
		if err := nodes["n1"].AddVoter(ctx(t), id, nodes[id].Addr(), nodes[id].grpc); err != nil {
			t.Fatal(err)
		}
	}
	leaderNode := func() *testNode {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range nodes {
			if n.IsLeader() {
				return n
			}
		}
		return nil
	}
	anyNode := func(rng *rand.Rand) *testNode {
		mu.Lock()
		defer mu.Unlock()
		return nodes[fmt.Sprint("n", 1+rng.IntN(3))]
	}

	type outcome int
	const (
		acked outcome = iota
		notAppended
		unknown
	)
	var (
		outMu    sync.Mutex
		outcomes = map[string]outcome{}
		proposed atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g+1)))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// Mostly to the leader; a quarter to any node, most of
				// which refuse.
				n := leaderNode()
				if rng.IntN(4) == 0 {
					n = anyNode(rng)
				}
				if n == nil {
					time.Sleep(5 * time.Millisecond) // pacing while no leader is known
					continue
				}
				v := fmt.Sprintf("g%d-%d", g, i)
				c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				err := n.Propose(c, []byte(v))
				cancel()
				var o outcome
				switch {
				case err == nil:
					o = acked
				case errors.Is(err, cluster.ErrUnknownOutcome):
					o = unknown
				case errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrShutdown):
					o = notAppended
				default:
					t.Errorf("propose %s: %v", v, err)
					return
				}
				outMu.Lock()
				outcomes[v] = o
				outMu.Unlock()
				proposed.Add(1)
			}
		}()
	}

	for round := range 3 {
		target := proposed.Load() + 20 + rng.Int64N(40)
		for proposed.Load() < target {
			time.Sleep(time.Millisecond) // pacing the load generator, not awaiting a result
		}
		old := leaderNode()
		if old == nil {
			old, _ = waitLeaderNode(h, nodes, &mu)
		}
		addr := old.Addr()
		if err := old.Shutdown(); err != nil {
			t.Fatal(err)
		}
		id, _ := h.waitLeader()
		for id == old.ID() {
			id, _ = h.waitLeader()
		}
		restarted := h.open(old.ID(), addr, old.dir, old.sm, nil)
		mu.Lock()
		nodes[old.ID()] = restarted
		mu.Unlock()
		t.Logf("round %d: %s stopped and restarted, %s leads", round, old.ID(), id)
	}
	close(stop)
	wg.Wait()

	leader, _ := waitLeaderNode(h, nodes, &mu)
	propose(t, leader, "end")
	var logs [][]string
	for id, n := range nodes {
		n.sm.waitFor(t, id+" applying the end", func(s memState) bool {
			return len(s.Entries) > 0 && s.Entries[len(s.Entries)-1] == "end"
		})
		logs = append(logs, n.sm.entries())
	}
	for _, l := range logs[1:] {
		if !slices.Equal(l, logs[0]) {
			t.Fatalf("the nodes applied different logs:\n%q\n%q", logs[0], l)
		}
	}
	count := map[string]int{}
	for _, v := range logs[0] {
		count[v]++
	}
	counts := map[outcome]int{}
	for v, o := range outcomes {
		counts[o]++
		switch {
		case o == acked && count[v] != 1:
			t.Errorf("acknowledged %s is in the log %d times", v, count[v])
		case o == notAppended && count[v] != 0:
			t.Errorf("%s, refused as not appended, is in the log %d times", v, count[v])
		case o == unknown && count[v] > 1:
			t.Errorf("%s, of unknown outcome, is in the log %d times", v, count[v])
		}
	}
	for v, c := range count {
		if _, ok := outcomes[v]; !ok && v != "end" {
			t.Errorf("%s is in the log %d times but was not proposed", v, c)
		}
	}
	t.Logf("%d acknowledged, %d not appended, %d of unknown outcome, %d entries", counts[acked], counts[notAppended], counts[unknown], len(logs[0]))
}

// waitLeaderNode returns a node that leads now, waiting for an election.
func waitLeaderNode(h *harness, nodes map[string]*testNode, mu *sync.Mutex) (*testNode, string) {
	h.t.Helper()
	for {
		mu.Lock()
		for id, n := range nodes {
			if n.IsLeader() {
				mu.Unlock()
				return n, id
			}
		}
		mu.Unlock()
		h.waitLeader()
	}
}
