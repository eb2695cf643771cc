package web

import (
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/fsm"
)

func TestStuckLease(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	leased := fsm.Instance{Status: fsm.StatusLeased, UpdatedAt: t0, Lease: fsm.Lease{AcquiredAt: t0, ExpiresAt: t0.Add(30 * time.Second)}}
	for _, c := range []struct {
		name string
		in   fsm.Instance
		now  time.Time
		want bool
	}{
		{"fresh", leased, t0.Add(10 * time.Second), false},
		{"at half", leased, t0.Add(15 * time.Second), false},
		{"past half", leased, t0.Add(16 * time.Second), true},
		{"never expires", fsm.Instance{Status: fsm.StatusLeased, UpdatedAt: t0}, t0.Add(time.Hour), false},
		{"not leased", fsm.Instance{Status: fsm.StatusReady, UpdatedAt: t0}, t0.Add(time.Hour), false},
	} {
		if got := stuck(c.in, c.now); got != c.want {
			t.Errorf("%s: stuck = %v, want %v", c.name, got, c.want)
		}
	}
	// A heartbeat is a change: it moves UpdatedAt and the expiry together.
	hb := leased
	hb.UpdatedAt, hb.Lease.ExpiresAt = t0.Add(14*time.Second), t0.Add(44*time.Second)
	if stuck(hb, t0.Add(20*time.Second)) {
		t.Error("a lease just extended is stuck")
	}
}

// TestLayoutDrawsEveryNodeAndEdge lays out the bundled machines: every
// node once, every transition once, inside the drawing, with counts and
// rates where given.
func TestLayoutDrawsEveryNodeAndEdge(t *testing.T) {
	for _, src := range machines.Bundled() {
		m, err := machines.Compile(src.File, src.Data)
		if err != nil {
			t.Fatal(err)
		}
		counts := map[string]map[fsm.Status]int{m.Start: {fsm.StatusReady: 3}, fsm.NodeFailed: {fsm.StatusFinal: 1}}
		var first string
		for _, n := range m.Order {
			if len(m.Nodes[n].Order) > 0 {
				first = m.Nodes[n].Order[0]
				if n == m.Start {
					break
				}
			}
		}
		g := layout(m, counts, map[edgeKey]float64{{m.Start, first}: 2.5})
		edges := 0
		for _, n := range m.Nodes {
			edges += len(n.Transitions)
		}
		if len(g.Nodes) != len(m.Nodes)+1 || len(g.Edges) != edges {
			t.Errorf("%s: %d nodes, %d edges; want %d, %d", m.ID, len(g.Nodes), len(g.Edges), len(m.Nodes)+1, edges)
		}
		seen := map[string]bool{}
		for _, n := range g.Nodes {
			if seen[n.Name] {
				t.Errorf("%s: node %s drawn twice", m.ID, n.Name)
			}
			seen[n.Name] = true
			if n.X < 0 || n.Y < 0 || n.X+nodeW > g.W || n.Y+nodeH > g.H {
				t.Errorf("%s: node %s at %d,%d outside %dx%d", m.ID, n.Name, n.X, n.Y, g.W, g.H)
			}
			if n.Name == m.Start && (n.Total != 3 || n.Counts[0] != "3 READY") {
				t.Errorf("%s: start node counts %v", m.ID, n.Counts)
			}
		}
		if !seen[fsm.NodeFailed] {
			t.Errorf("%s: the occupied system node %s is not drawn", m.ID, fsm.NodeFailed)
		}
		rated := false
		for _, e := range g.Edges {
			rated = rated || strings.HasSuffix(e.Label, "2.5/min")
			if strings.Contains(e.Path, "NaN") {
				t.Errorf("%s: edge %s has path %s", m.ID, e.Label, e.Path)
			}
		}
		if !rated {
			t.Errorf("%s: no edge shows the rate of %s/%s", m.ID, m.Start, first)
		}
	}
}
