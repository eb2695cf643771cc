package machines

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// Compile parses, validates and compiles one definition. file is only used
// in error messages.
//
// On success the machine has Version 0: the store assigns versions. On
// failure the error is a *ValidationError when there is one problem and
// ValidationErrors (sorted by position, at most MaxErrors) when there are
// several; Compile reports every problem it can find in one go. Compile never
// panics, whatever src holds.
func Compile(file string, src []byte) (*fsm.Machine, error) {
	return CompileWith(file, src, nil)
}

// Resolver returns the latest compiled version of a machine, for the checks
// that look across machines; ok is false when no such machine exists.
type Resolver func(id string) (m *fsm.Machine, ok bool)

// CompileWith is Compile, and when resolve is not nil it also checks what a
// device machine's reconcile table says about its job machine: the job
// machine exists and is of kind job, and each rule's job node and
// transition exist there (a non-signal transition out of that node). Those
// problems carry the position in file like any other.
func CompileWith(file string, src []byte, resolve Resolver) (*fsm.Machine, error) {
	c := &compiler{file: file, resolve: resolve}
	root := c.load(src)
	if root == nil {
		return nil, result(c.errs)
	}
	m := c.machine(root)
	if len(c.errs) > 0 {
		return nil, result(c.errs)
	}
	return m, nil
}

// compiler collects problems while it walks one document.
type compiler struct {
	file string
	errs []*ValidationError

	// nodeKeys and startKeys remember positions for the checks that run once
	// every node is known.
	nodeKeys  map[string]*yaml.Node
	startKeys []startKey
	// shapeUnknown is set when a node's body, start or final could not be
	// read: the missing start or final node may be that one, so their
	// absence is not reported on top.
	shapeUnknown bool
	targets      []target
	// resolve, when set, looks up other machines (see CompileWith).
	resolve Resolver
	// kind is the machine's kind, read before its nodes.
	kind fsm.Kind
}

type startKey struct {
	node string
	key  *yaml.Node
}

// target is a transition's "to", checked once every node is known.
type target struct {
	path string
	name string
	at   *yaml.Node
}

// errAt records a problem at n's position (unknown when n is nil).
func (c *compiler) errAt(n *yaml.Node, field, reason string) {
	e := &ValidationError{File: c.file, Field: field, Reason: reason}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	c.errs = append(c.errs, e)
}

// entry is one key: value pair of a mapping.
type entry struct {
	name     string
	key, val *yaml.Node
}

// fields reads a mapping with a fixed set of field names. It reports a value
// that is not a mapping, keys that are not strings, unknown and duplicate
// keys, and returns the known fields by name.
func (c *compiler) fields(path string, n *yaml.Node, allowed ...string) (map[string]entry, bool) {
	entries, ok := c.mapping(path, n)
	if !ok {
		return nil, false
	}
	out := make(map[string]entry, len(entries))
	for _, e := range entries {
		p := join(path, e.name)
		if !slices.Contains(allowed, e.name) {
			c.errAt(e.key, p, fmt.Sprintf("unknown field %q; want one of: %s", e.name, strings.Join(allowed, ", ")))
			continue
		}
		out[e.name] = e
	}
	return out, true
}

// mapping returns the entries of a mapping in definition order, without
// duplicates and with string keys only; each problem is reported at its key.
func (c *compiler) mapping(path string, n *yaml.Node) ([]entry, bool) {
	v := deref(n)
	if v == nil || v.Kind != yaml.MappingNode {
		c.errAt(n, path, "must be a mapping, got "+describe(n))
		return nil, false
	}
	entries := make([]entry, 0, len(v.Content)/2)
	seen := make(map[string]*yaml.Node, len(v.Content)/2)
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		dk := deref(k)
		if dk == nil || dk.Kind != yaml.ScalarNode || dk.ShortTag() != "!!str" {
			if dk != nil && dk.ShortTag() == "!!merge" {
				c.errAt(k, path, "merge keys (<<) are not supported; use an alias (*name) as a whole value instead")
			} else {
				c.errAt(k, path, "keys must be strings, got "+describe(k))
			}
			continue
		}
		if first, dup := seen[dk.Value]; dup {
			c.errAt(k, join(path, dk.Value), fmt.Sprintf("duplicate key %q (first defined at line %d)", dk.Value, first.Line))
			continue
		}
		seen[dk.Value] = k
		entries = append(entries, entry{name: dk.Value, key: k, val: val})
	}
	return entries, true
}

var (
	idPattern   = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)
	namePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,63}$`)
)

// checkName reports what is wrong with a machine id, node name or
// transition name, or "" if nothing is.
func checkName(name string, pattern *regexp.Regexp) string {
	switch {
	case strings.HasPrefix(name, fsm.SystemPrefix):
		return "reserved: names under " + fsm.SystemPrefix + " belong to the system"
	case len(name) > MaxNameLen:
		return fmt.Sprintf("name is %d bytes, longer than the limit of %d", len(name), MaxNameLen)
	case !pattern.MatchString(name):
		return fmt.Sprintf("invalid name %q: must match %s", name, pattern)
	}
	return ""
}

// machine compiles the root mapping.
func (c *compiler) machine(root *yaml.Node) *fsm.Machine {
	f, ok := c.fields("", root, machineKeys...)
	if !ok {
		return nil
	}
	m := &fsm.Machine{Kind: DefaultKind, UpgradeStrategy: DefaultUpgradeStrategy}
	if e, ok := f["id"]; !ok {
		c.errAt(root, "id", "required: the machine id")
	} else if id, ok := c.str("id", e.val); ok {
		if reason := checkName(id, idPattern); reason != "" {
			c.errAt(e.val, "id", reason)
		}
		m.ID = id
	}
	if e, ok := f["kind"]; ok {
		if s, ok := c.str("kind", e.val); ok {
			if k, ok := kinds.lookup(s); ok {
				m.Kind = k
			} else {
				c.errAt(e.val, "kind", fmt.Sprintf("unknown kind %q; want one of: %s", s, kinds.list()))
			}
		}
	}
	if e, ok := f["description"]; ok {
		if s, ok := c.str("description", e.val); ok {
			if len(s) > MaxDescriptionBytes {
				c.errAt(e.val, "description", fmt.Sprintf("description is %d bytes, longer than the limit of %d", len(s), MaxDescriptionBytes))
			}
			m.Description = s
		}
	}
	if e, ok := f["upgrade_strategy"]; ok {
		if s, ok := c.str("upgrade_strategy", e.val); ok {
			if u, ok := upgradeStrategies.lookup(s); ok {
				m.UpgradeStrategy = u
			} else {
				c.errAt(e.val, "upgrade_strategy", fmt.Sprintf("unknown upgrade strategy %q; want one of: %s", s, upgradeStrategies.list()))
			}
		}
	}
	e, ok := f["nodes"]
	if !ok {
		c.errAt(root, "nodes", "required: the machine's nodes")
		return m
	}
	c.kind = m.Kind
	c.nodes(m, e)
	if e, ok := f["reconcile"]; ok {
		c.reconcile(m, e)
	}
	m.Breaker = fsm.DefaultBreakerPolicy()
	if e, ok := f["breaker"]; ok {
		m.Breaker = c.breaker("breaker", e.val)
	}
	return m
}

// nodes compiles the nodes mapping, then runs the whole-machine checks.
func (c *compiler) nodes(m *fsm.Machine, nodes entry) {
	entries, ok := c.mapping("nodes", nodes.val)
	if !ok {
		return
	}
	if len(entries) == 0 {
		c.errAt(nodes.key, "nodes", "a machine needs at least one node")
		return
	}
	m.Nodes = make(map[string]*fsm.Node, len(entries))
	c.nodeKeys = make(map[string]*yaml.Node, len(entries))
	for i, e := range entries {
		path := join("nodes", e.name)
		if i == MaxNodes {
			c.errAt(e.key, path, fmt.Sprintf("too many nodes: more than %d", MaxNodes))
			// The rest are not compiled, but transitions to them are not
			// mistakes to report.
			for _, rest := range entries[i:] {
				c.nodeKeys[rest.name] = rest.key
			}
			break
		}
		// A node with a bad name is still compiled, so that its body is
		// checked too and the nodes around it do not report it missing.
		if reason := checkName(e.name, namePattern); reason != "" {
			c.errAt(e.key, path, reason)
		}
		c.nodeKeys[e.name] = e.key
		m.Nodes[e.name] = c.node(path, e)
		m.Order = append(m.Order, e.name)
	}
	c.checkGraph(m, nodes.key)
}

// node compiles one node.
func (c *compiler) node(path string, e entry) *fsm.Node {
	n := &fsm.Node{Name: e.name, Transitions: map[string]*fsm.Transition{}}
	f, ok := c.fields(path, e.val, nodeKeys...)
	if !ok {
		c.shapeUnknown = true
		return n
	}
	if fe, ok := f["final"]; ok {
		if n.Final, ok = c.boolean(join(path, "final"), fe.val); !ok {
			c.shapeUnknown = true
		}
	}
	if fe, ok := f["start"]; ok {
		start, ok := c.boolean(join(path, "start"), fe.val)
		if !ok {
			c.shapeUnknown = true
		}
		if start {
			c.startKeys = append(c.startKeys, startKey{node: e.name, key: fe.key})
			if n.Final {
				c.errAt(fe.key, join(path, "start"), "the start node cannot be final")
			}
		}
	}
	if fe, ok := f["blocking"]; ok {
		if n.Blocking, _ = c.boolean(join(path, "blocking"), fe.val); n.Blocking {
			switch {
			case c.kind != fsm.KindDevice:
				c.errAt(fe.key, join(path, "blocking"), "only a device machine (kind: device) has blocking nodes")
			case n.Final:
				c.errAt(fe.key, join(path, "blocking"), "a final node cannot be blocking: the device never leaves it")
			}
		}
	}
	if n.Final {
		// A final node ends the instance: nothing leases it, nothing
		// retries it, nothing leaves it. Saying otherwise is a mistake
		// worth pointing at rather than ignoring.
		for _, name := range []string{"timeout", "retry", "transitions"} {
			if fe, ok := f[name]; ok {
				c.errAt(fe.key, join(path, name), "a final node has no "+name)
			}
		}
		return n
	}
	n.Timeout = fsm.Timeout{Fixed: DefaultTimeout}
	if fe, ok := f["timeout"]; ok {
		n.Timeout = c.timeout(join(path, "timeout"), fe.val)
	}
	n.Retry = DefaultRetry()
	if fe, ok := f["retry"]; ok {
		n.Retry = c.retry(join(path, "retry"), fe.val)
	}
	if fe, ok := f["transitions"]; ok {
		c.transitions(join(path, "transitions"), n, fe.val)
	}
	return n
}

// timeout compiles a fixed duration or a percentile block.
func (c *compiler) timeout(path string, n *yaml.Node) fsm.Timeout {
	if v := deref(n); v == nil || v.Kind != yaml.MappingNode {
		d, ok := c.duration(path, n)
		if ok && d > MaxTimeout {
			c.errAt(n, path, fmt.Sprintf("timeout %s is longer than the limit of %s", FormatDuration(d), FormatDuration(MaxTimeout)))
		}
		return fsm.Timeout{Fixed: d}
	}
	f, ok := c.fields(path, n, timeoutKeys...)
	if !ok {
		return fsm.Timeout{}
	}
	var t fsm.Timeout
	for _, name := range timeoutKeys {
		if _, ok := f[name]; !ok {
			c.errAt(n, join(path, name), "required in a percentile timeout")
		}
	}
	if e, ok := f["percentile"]; ok {
		if p, ok := c.number(join(path, "percentile"), e.val); ok {
			if !(p > 0 && p < 100) {
				c.errAt(e.val, join(path, "percentile"), fmt.Sprintf("percentile %v must be between 0 and 100, exclusive", p))
			}
			t.Percentile = p
		}
	}
	minOK, maxOK := false, false
	if e, ok := f["min"]; ok {
		if t.Min, minOK = c.duration(join(path, "min"), e.val); minOK && t.Min == 0 {
			c.errAt(e.val, join(path, "min"), "must be positive")
			minOK = false
		}
	}
	if e, ok := f["max"]; ok {
		if t.Max, maxOK = c.duration(join(path, "max"), e.val); maxOK {
			switch {
			case t.Max > MaxTimeout:
				c.errAt(e.val, join(path, "max"), fmt.Sprintf("timeout %s is longer than the limit of %s", FormatDuration(t.Max), FormatDuration(MaxTimeout)))
			case minOK && t.Max < t.Min:
				c.errAt(e.val, join(path, "max"), fmt.Sprintf("max %s is less than min %s", FormatDuration(t.Max), FormatDuration(t.Min)))
			}
		}
	}
	return t
}

// retry compiles a retry block; omitted fields keep DefaultRetry's values.
func (c *compiler) retry(path string, n *yaml.Node) fsm.Retry {
	r := DefaultRetry()
	f, ok := c.fields(path, n, retryKeys...)
	if !ok {
		return r
	}
	if e, ok := f["max_attempts"]; ok {
		p := join(path, "max_attempts")
		if i, ok := c.integer(p, e.val); ok {
			switch {
			case i < 0:
				c.errAt(e.val, p, fmt.Sprintf("max_attempts %d must not be negative (0 means unlimited)", i))
			case i > math.MaxInt32:
				c.errAt(e.val, p, fmt.Sprintf("max_attempts %d is larger than the limit of %d", i, math.MaxInt32))
			default:
				r.MaxAttempts = int32(i)
			}
		}
	}
	if e, ok := f["backoff"]; ok {
		p := join(path, "backoff")
		if s, ok := c.str(p, e.val); ok {
			if b, ok := backoffs.lookup(s); ok {
				r.Backoff = b
			} else {
				c.errAt(e.val, p, fmt.Sprintf("unknown backoff %q; want one of: %s", s, backoffs.list()))
			}
		}
	}
	initialOK, maxOK := true, true
	initial, hasInitial := f["initial"]
	if hasInitial {
		p := join(path, "initial")
		var d time.Duration
		if d, initialOK = c.duration(p, initial.val); initialOK {
			switch {
			case d > fsm.MaxDelay:
				c.errAt(initial.val, p, fmt.Sprintf("initial %s is longer than the limit of %s", FormatDuration(d), FormatDuration(fsm.MaxDelay)))
				initialOK = false
			default:
				r.Initial = d
			}
		}
	}
	maxE, hasMax := f["max"]
	if hasMax {
		p := join(path, "max")
		var d time.Duration
		if d, maxOK = c.duration(p, maxE.val); maxOK {
			if d > fsm.MaxDelay {
				c.errAt(maxE.val, p, fmt.Sprintf("max %s is longer than the limit of %s", FormatDuration(d), FormatDuration(fsm.MaxDelay)))
				maxOK = false
			} else {
				r.Max = d
			}
		}
	}
	// initial: 0s retries at once. Without max, the default max rises to an
	// initial above it: an explicit initial is never cut by a default.
	if initialOK && maxOK && r.Max < r.Initial {
		if hasMax {
			c.errAt(maxE.val, join(path, "max"), fmt.Sprintf("max %s is less than initial %s", FormatDuration(r.Max), FormatDuration(r.Initial)))
		} else {
			r.Max = r.Initial
		}
	}
	if e, ok := f["jitter"]; ok {
		p := join(path, "jitter")
		if j, ok := c.number(p, e.val); ok {
			if !(j >= 0 && j <= 1) {
				c.errAt(e.val, p, fmt.Sprintf("jitter %v must be between 0 and 1", j))
			} else {
				r.Jitter = j
			}
		}
	}
	return r
}

// transitions compiles a node's transitions mapping.
func (c *compiler) transitions(path string, n *fsm.Node, v *yaml.Node) {
	entries, ok := c.mapping(path, v)
	if !ok {
		return
	}
	for i, e := range entries {
		p := join(path, e.name)
		if i == MaxTransitionsPerNode {
			c.errAt(e.key, p, fmt.Sprintf("too many transitions: more than %d per node", MaxTransitionsPerNode))
			break
		}
		if reason := checkName(e.name, namePattern); reason != "" {
			c.errAt(e.key, p, reason)
		}
		t := &fsm.Transition{Name: e.name}
		if d := deref(e.val); d != nil && d.Kind == yaml.MappingNode {
			c.transitionBlock(p, t, e.val)
		} else if d != nil && d.Kind == yaml.ScalarNode && d.ShortTag() == "!!str" {
			c.target(p, t, e.val)
		} else {
			c.errAt(e.val, p, "must be a node name or a mapping with to, delay and signal, got "+describe(e.val))
		}
		if c.kind == fsm.KindJob && t.To == n.Name {
			c.errAt(e.key, p, "a job machine's transition cannot lead back to its own node: a retry would make the job WAITING, and a job is HELD by its device")
		}
		n.Transitions[e.name] = t
		n.Order = append(n.Order, e.name)
	}
}

// transitionBlock compiles {to: node, delay: 30s, signal: true}.
func (c *compiler) transitionBlock(path string, t *fsm.Transition, v *yaml.Node) {
	f, ok := c.fields(path, v, transitionKeys...)
	if !ok {
		return
	}
	if e, ok := f["to"]; ok {
		c.target(join(path, "to"), t, e.val)
	} else {
		c.errAt(v, join(path, "to"), "required: the target node")
	}
	if e, ok := f["delay"]; ok {
		p := join(path, "delay")
		if d, ok := c.duration(p, e.val); ok {
			switch {
			case d > fsm.MaxDelay:
				c.errAt(e.val, p, fmt.Sprintf("delay %s is longer than the limit of %s", FormatDuration(d), FormatDuration(fsm.MaxDelay)))
			case d > 0 && c.kind == fsm.KindJob:
				c.errAt(e.val, p, "a job machine's transitions cannot be delayed: its instances are HELD by their device, never WAITING")
			}
			t.Delay = d
		}
	}
	if e, ok := f["signal"]; ok {
		t.Signal, _ = c.boolean(join(path, "signal"), e.val)
	}
}

// target reads a transition's target name; whether the node exists is
// checked once every node is known.
func (c *compiler) target(path string, t *fsm.Transition, v *yaml.Node) {
	name, ok := c.str(path, v)
	if !ok {
		return
	}
	if strings.HasPrefix(name, fsm.SystemPrefix) {
		c.errAt(v, path, checkName(name, namePattern))
		return
	}
	t.To = name
	c.targets = append(c.targets, target{path: path, name: name, at: v})
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
