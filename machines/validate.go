package machines

import (
	"fmt"

	"go.yaml.in/yaml/v3"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// checkGraph runs the checks that need every node: one start node, targets
// that exist, at least one final node, and then, only if the machine is
// otherwise sound, the two reachability checks (on a broken machine they
// would mostly repeat the real problem in other words).
func (c *compiler) checkGraph(m *fsm.Machine, nodesKey *yaml.Node) {
	switch {
	case len(c.startKeys) == 0 && c.shapeUnknown:
	case len(c.startKeys) == 0:
		c.errAt(nodesKey, "nodes", "no start node: exactly one node needs start: true")
	default:
		first := c.startKeys[0]
		m.Start = first.node
		for _, s := range c.startKeys[1:] {
			c.errAt(s.key, join(join("nodes", s.node), "start"), fmt.Sprintf("a second start node: %q (line %d) is already the start node", first.node, first.key.Line))
		}
	}
	for _, t := range c.targets {
		if _, ok := c.nodeKeys[t.name]; !ok {
			c.errAt(t.at, t.path, fmt.Sprintf("unknown node %q", t.name))
		}
	}
	finals := 0
	for _, n := range m.Nodes {
		if n.Final {
			finals++
		}
	}
	if finals == 0 && !c.shapeUnknown {
		c.errAt(nodesKey, "nodes", "no final node: at least one node needs final: true")
	}
	if len(c.errs) > 0 {
		return
	}

	// Forward from the start node: every node must be reachable, or it is
	// dead text that an instance can never be in.
	reached := map[string]bool{m.Start: true}
	queue := []string{m.Start}
	for len(queue) > 0 {
		n := m.Nodes[queue[0]]
		queue = queue[1:]
		for _, name := range n.Order {
			if to := n.Transitions[name].To; !reached[to] {
				reached[to] = true
				queue = append(queue, to)
			}
		}
	}
	// Backward from the final nodes: every non-final node must be able to
	// finish, or its instances can only end by being cancelled or failing.
	incoming := make(map[string][]string, len(m.Nodes))
	for _, name := range m.Order {
		n := m.Nodes[name]
		for _, tn := range n.Order {
			to := n.Transitions[tn].To
			incoming[to] = append(incoming[to], name)
		}
	}
	finishes := make(map[string]bool, len(m.Nodes))
	queue = queue[:0]
	for _, name := range m.Order {
		if m.Nodes[name].Final {
			finishes[name] = true
			queue = append(queue, name)
		}
	}
	for len(queue) > 0 {
		to := queue[0]
		queue = queue[1:]
		for _, from := range incoming[to] {
			if !finishes[from] {
				finishes[from] = true
				queue = append(queue, from)
			}
		}
	}
	for _, name := range m.Order {
		path := join("nodes", name)
		if !reached[name] {
			c.errAt(c.nodeKeys[name], path, fmt.Sprintf("unreachable: no path from the start node %q", m.Start))
		}
		if !finishes[name] {
			c.errAt(c.nodeKeys[name], path, "no path to a final node")
		}
	}
}
