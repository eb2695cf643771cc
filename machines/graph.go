package machines

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// DOT renders the machine as a Graphviz digraph, nodes and edges in
// definition order so that the output is deterministic and diffs well. The
// start node is bold, final nodes are double circles, each edge is labelled
// with its transition name (and its delay, "throttled (30s)"), and signal
// edges are dashed.
func DOT(m *fsm.Machine) string {
	var b strings.Builder
	fmt.Fprintf(&b, "digraph %s {\n", dotQuote(machineID(m)))
	b.WriteString("\trankdir=LR;\n")
	order := nodeOrder(m)
	for _, name := range order {
		n := m.Nodes[name]
		var attrs []string
		if name == m.Start {
			attrs = append(attrs, "style=bold")
		}
		if n.Final {
			attrs = append(attrs, "shape=doublecircle")
		}
		if len(attrs) == 0 {
			fmt.Fprintf(&b, "\t%s;\n", dotQuote(name))
		} else {
			fmt.Fprintf(&b, "\t%s [%s];\n", dotQuote(name), strings.Join(attrs, ", "))
		}
	}
	for _, name := range order {
		n := m.Nodes[name]
		for _, tn := range transitionOrder(n) {
			t := n.Transitions[tn]
			attrs := []string{"label=" + dotQuote(edgeLabel(t, false))}
			if t.Signal {
				attrs = append(attrs, "style=dashed")
			}
			fmt.Fprintf(&b, "\t%s -> %s [%s];\n", dotQuote(name), dotQuote(t.To), strings.Join(attrs, ", "))
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// Mermaid renders the machine as a Mermaid stateDiagram-v2, in definition
// order: "[*] --> start", "a --> b: name", "final --> [*]". Mermaid has no
// dashed transitions, so signal edges say "(signal)" in their label.
func Mermaid(m *fsm.Machine) string {
	var b strings.Builder
	b.WriteString("stateDiagram-v2\n")
	b.WriteString("\tdirection LR\n")
	order := nodeOrder(m)
	ids := mermaidIDs(order)
	for _, name := range order {
		if id := ids[name]; id != name {
			fmt.Fprintf(&b, "\tstate %s as %s\n", mermaidQuote(name), id)
		}
	}
	if m == nil {
		return b.String()
	}
	if _, ok := m.Nodes[m.Start]; ok {
		fmt.Fprintf(&b, "\t[*] --> %s\n", ids[m.Start])
	}
	for _, name := range order {
		n := m.Nodes[name]
		for _, tn := range transitionOrder(n) {
			t := n.Transitions[tn]
			to, ok := ids[t.To]
			if !ok {
				// Only a hand-built machine can point outside itself; show
				// the edge anyway, under a name Mermaid accepts.
				to = mermaidQuoteID(t.To)
			}
			fmt.Fprintf(&b, "\t%s --> %s: %s\n", ids[name], to, mermaidLabel(edgeLabel(t, true)))
		}
		if n.Final {
			fmt.Fprintf(&b, "\t%s --> [*]\n", ids[name])
		}
	}
	return b.String()
}

func machineID(m *fsm.Machine) string {
	if m == nil {
		return ""
	}
	return m.ID
}

// nodeOrder returns the node names in definition order. Machines built by
// hand may have an incomplete Order; the nodes it misses follow, sorted, so
// that nothing is left out and the output stays deterministic.
func nodeOrder(m *fsm.Machine) []string {
	if m == nil {
		return nil
	}
	var order []string
	seen := make(map[string]bool, len(m.Nodes))
	for _, name := range m.Order {
		if n, ok := m.Nodes[name]; ok && n != nil && !seen[name] {
			seen[name] = true
			order = append(order, name)
		}
	}
	for _, name := range sortedKeys(m.Nodes) {
		if !seen[name] && m.Nodes[name] != nil {
			order = append(order, name)
		}
	}
	return order
}

// transitionOrder is nodeOrder for a node's transitions.
func transitionOrder(n *fsm.Node) []string {
	var order []string
	seen := make(map[string]bool, len(n.Transitions))
	for _, name := range n.Order {
		if t, ok := n.Transitions[name]; ok && t != nil && !seen[name] {
			seen[name] = true
			order = append(order, name)
		}
	}
	for _, name := range sortedKeys(n.Transitions) {
		if !seen[name] && n.Transitions[name] != nil {
			order = append(order, name)
		}
	}
	return order
}

// edgeLabel is "name", "name (30s)", and with signals marked,
// "name (signal)" or "name (30s, signal)".
func edgeLabel(t *fsm.Transition, markSignal bool) string {
	var notes []string
	if t.Delay > 0 {
		notes = append(notes, FormatDuration(t.Delay))
	}
	if markSignal && t.Signal {
		notes = append(notes, "signal")
	}
	if len(notes) == 0 {
		return t.Name
	}
	return t.Name + " (" + strings.Join(notes, ", ") + ")"
}

// dotQuote renders s as a DOT double-quoted string.
func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`)
	return `"` + r.Replace(s) + `"`
}

var mermaidPlainID = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)

// mermaidKeywords are words the stateDiagram grammar gives a meaning to; a
// state named like one gets an alias.
var mermaidKeywords = []string{
	"as", "class", "classdef", "default", "direction", "end", "hide", "left",
	"note", "of", "right", "scale", "state", "style", "acctitle", "accdescr",
}

// mermaidIDs gives every node a Mermaid state id: its own name when Mermaid
// reads it as a plain id, otherwise "n<i>" (declared with the real name as
// its label), made unique against every node name.
func mermaidIDs(order []string) map[string]string {
	names := make(map[string]bool, len(order))
	for _, name := range order {
		names[name] = true
	}
	ids := make(map[string]string, len(order))
	for i, name := range order {
		if mermaidPlainID.MatchString(name) && !slices.Contains(mermaidKeywords, strings.ToLower(name)) {
			ids[name] = name
			continue
		}
		id := fmt.Sprintf("n%d", i)
		for names[id] {
			id += "_"
		}
		names[id] = true
		ids[name] = id
	}
	return ids
}

// mermaidQuote renders s as a Mermaid state description in double quotes,
// which cannot contain a double quote or a line break.
func mermaidQuote(s string) string {
	return `"` + mermaidLabel(strings.ReplaceAll(s, `"`, "'")) + `"`
}

// mermaidQuoteID turns an arbitrary name into something Mermaid reads as a
// state id.
func mermaidQuoteID(s string) string {
	var b strings.Builder
	b.WriteString("x_")
	for _, r := range s {
		if r < 128 && (r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// mermaidLabel keeps a label on one line.
func mermaidLabel(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}
