package web

import (
	"fmt"
	"math"
	"strings"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// Graph geometry, in SVG user units.
const (
	colWidth  = 360
	rowHeight = 140
	nodeW     = 240
	nodeH     = 62
	margin    = 24
	// top leaves room for the loops over the first row.
	top = 90
)

// NodeW is the node box's width, for the template.
func (graph) NodeW() int { return nodeW }

// NodeH is the node box's height.
func (graph) NodeH() int { return nodeH }

// HalfW is half the node box's width: where its text is centred.
func (graph) HalfW() int { return nodeW / 2 }

// graph is a machine laid out for drawing: nodes in columns by their
// distance from the start node, edges between them.
type graph struct {
	W, H  int
	Nodes []gnode
	Edges []gedge
}

type gnode struct {
	Name         string
	X, Y         int
	Start, Final bool
	// Counts are "3 READY", ... of the instances in the node.
	Counts []string
	Total  int
}

type gedge struct {
	Label string
	// Path is the SVG path; LX, LY where the label goes.
	Path   string
	LX, LY int
	Signal bool
	// Rate is the moves per minute over the rate window, 0 when none.
	Rate float64
}

// layout places m's nodes in columns by breadth-first distance from the
// start node (unreachable system nodes last), in definition order within
// a column, and draws each edge as a curve; a self loop is an arc over its
// node. It is a deliberately simple layered layout: machines are small,
// and a server-side SVG needs no layout library in the browser.
func layout(m *fsm.Machine, counts map[string]map[fsm.Status]int, rates map[edgeKey]float64) *graph {
	rank := map[string]int{m.Start: 0}
	queue := []string{m.Start}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		node := m.Nodes[n]
		if node == nil {
			continue
		}
		for _, tn := range node.Order {
			to := node.Transitions[tn].To
			if _, seen := rank[to]; !seen {
				rank[to] = rank[n] + 1
				queue = append(queue, to)
			}
		}
	}
	maxRank := 0
	for _, r := range rank {
		maxRank = max(maxRank, r)
	}
	order := append([]string(nil), m.Order...)
	for name := range counts {
		if m.Nodes[name] == nil {
			order = append(order, name) // a system node (dfsmr.failed, ...)
		}
	}
	for _, name := range order {
		if _, ok := rank[name]; !ok {
			rank[name] = maxRank + 1
		}
	}
	cols := map[int]int{}
	pos := map[string][2]int{}
	g := &graph{}
	for _, name := range sortedSystemLast(order) {
		r := rank[name]
		x, y := margin+r*colWidth, top+cols[r]*rowHeight
		cols[r]++
		pos[name] = [2]int{x, y}
		n := gnode{Name: name, X: x, Y: y, Start: name == m.Start}
		if node := m.Nodes[name]; node != nil {
			n.Final = node.Final
		} else {
			n.Final = true
		}
		for _, st := range statuses {
			if c := counts[name][st]; c > 0 {
				n.Counts = append(n.Counts, fmt.Sprintf("%d %s", c, st))
				n.Total += c
			}
		}
		g.Nodes = append(g.Nodes, n)
		g.W = max(g.W, x+nodeW+margin)
		g.H = max(g.H, y+nodeH+margin)
	}
	for _, name := range m.Order {
		node := m.Nodes[name]
		loops, out := 0, 0
		for _, tn := range node.Order {
			t := node.Transitions[tn]
			e := gedge{Label: tn, Signal: t.Signal, Rate: rates[edgeKey{name, tn}]}
			a, b := pos[name], pos[t.To]
			if name == t.To {
				e.Path, e.LX, e.LY = loopPath(a, loops)
				loops++
			} else {
				e.Path, e.LX, e.LY = edgePath(a, b, out)
				out++
			}
			if e.Rate > 0 {
				e.Label += fmt.Sprintf(" · %.1f/min", e.Rate)
			}
			g.Edges = append(g.Edges, e)
		}
	}
	return g
}

// sortedSystemLast keeps order but moves reserved dfsmr.* nodes to the end.
func sortedSystemLast(order []string) []string {
	var user, sys []string
	for _, n := range order {
		if strings.HasPrefix(n, "dfsmr.") {
			sys = append(sys, n)
		} else {
			user = append(user, n)
		}
	}
	return append(user, sys...)
}

// edgePath returns the path from node box a to node box b (top-left
// corners) and the label position. i, the index of the edge among its
// node's edges to other nodes, spreads parallel edges apart.
func edgePath(a, b [2]int, i int) (string, int, int) {
	ax, ay := a[0]+nodeW/2, a[1]+nodeH/2
	bx, by := b[0]+nodeW/2, b[1]+nodeH/2
	// Start and end on the boxes' borders, not their centres.
	sx, sy := border(ax, ay, bx, by)
	ex, ey := border(bx, by, ax, ay)
	mx, my := (sx+ex)/2, (sy+ey)/2
	// Bend sideways so that a back edge and a forward edge between the
	// same nodes do not overlap, and parallel edges fan out.
	dx, dy := float64(ex-sx), float64(ey-sy)
	l := math.Hypot(dx, dy)
	bend := 18.0 + 14*float64(i)
	if b[0] < a[0] || (b[0] == a[0] && b[1] < a[1]) {
		bend = -bend - 20
	}
	cx, cy := mx+int(-dy/l*bend), my+int(dx/l*bend)
	return fmt.Sprintf("M%d,%d Q%d,%d %d,%d", sx, sy, cx, cy, ex, ey), (mx + cx) / 2, (my+cy)/2 - 4
}

// loopPath draws the k-th self loop of the node box at a as an arc over
// its top edge, each loop higher than the one before; its label sits on
// the arc's top.
func loopPath(a [2]int, k int) (string, int, int) {
	cx, y := a[0]+nodeW/2, a[1]
	h := 34 + 22*k
	w := 28 + 10*k
	return fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", cx-w/2, y, cx-w, y-h, cx+w, y-h, cx+w/2, y), cx, y - h*3/4 - 3
}

// border moves from a box's centre (x, y) towards (tx, ty) to its border.
func border(x, y, tx, ty int) (int, int) {
	dx, dy := float64(tx-x), float64(ty-y)
	if dx == 0 && dy == 0 {
		return x, y
	}
	s := math.Min(math.Abs(float64(nodeW/2)/dx), math.Abs(float64(nodeH/2)/dy))
	return x + int(dx*s), y + int(dy*s)
}
