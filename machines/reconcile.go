package machines

import (
	"fmt"

	"go.yaml.in/yaml/v3"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// MaxRules is the most rules one reconcile table may have.
const MaxRules = 256

// reconcile compiles a device machine's reconcile block:
//
//	reconcile:
//	  jobs: print_job
//	  rules:
//	    - {device: ready, job: queued, command: print, transition: dispatch}
//	    - {device: error, job: none, wait: signal the printer cleared}
//
// A rule may name in forgotten the job transition to record instead of its
// command and transition when the device dropped the job: it reports the
// pair without it after it held it, or after it carried out the rule's
// command (see fsm.Reconcile).
//
// Job "none" (fsm.NoJob) is a device with no job and an empty queue; such
// a rule only waits. A rule with neither command nor transition may say
// why in wait.
//
// It runs after the nodes are compiled, so device nodes and commands are
// checked here; the job machine's nodes and transitions are checked when a
// Resolver is given (see CompileWith).
func (c *compiler) reconcile(m *fsm.Machine, e entry) {
	if m.Kind != fsm.KindDevice {
		c.errAt(e.key, "reconcile", "only a device machine (kind: device) has a reconcile table")
		return
	}
	f, ok := c.fields("reconcile", e.val, reconcileKeys...)
	if !ok {
		return
	}
	t := &fsm.ReconcileTable{}
	var jobs *fsm.Machine
	if je, ok := f["jobs"]; !ok {
		c.errAt(e.val, "reconcile.jobs", "required: the id of the job machine")
	} else if id, ok := c.str("reconcile.jobs", je.val); ok {
		if reason := checkName(id, idPattern); reason != "" {
			c.errAt(je.val, "reconcile.jobs", reason)
		} else if c.resolve != nil {
			var found bool
			switch jobs, found = c.resolve(id); {
			case !found:
				c.errAt(je.val, "reconcile.jobs", fmt.Sprintf("unknown machine %q: define the job machine first", id))
			case jobs.Kind != fsm.KindJob:
				c.errAt(je.val, "reconcile.jobs", fmt.Sprintf("machine %q is of kind %s; the jobs of a device need kind: job", id, jobs.Kind))
				jobs = nil
			}
		}
		t.Jobs = id
	}
	re, ok := f["rules"]
	if !ok {
		c.errAt(e.val, "reconcile.rules", "required: the table's rules")
		m.Reconcile = t
		return
	}
	seq := deref(re.val)
	if seq == nil || seq.Kind != yaml.SequenceNode {
		c.errAt(re.val, "reconcile.rules", "must be a list of rules, got "+describe(re.val))
		m.Reconcile = t
		return
	}
	if len(seq.Content) == 0 {
		c.errAt(re.key, "reconcile.rules", "a reconcile table needs at least one rule")
	}
	seen := map[[2]string]int{}
	for i, rn := range seq.Content {
		path := fmt.Sprintf("reconcile.rules[%d]", i)
		if i == MaxRules {
			c.errAt(rn, path, fmt.Sprintf("too many rules: more than %d", MaxRules))
			break
		}
		r, ok := c.rule(path, m, jobs, rn)
		if !ok {
			continue
		}
		key := [2]string{r.Device, r.Job}
		if first, dup := seen[key]; dup {
			c.errAt(rn, path, fmt.Sprintf("a second rule for device node %q and job node %q (the first is rule %d)", r.Device, r.Job, first))
			continue
		}
		seen[key] = i
		t.Rules = append(t.Rules, r)
	}
	m.Reconcile = t
}

// rule compiles one rule; ok is false when it is too broken to keep.
func (c *compiler) rule(path string, m, jobs *fsm.Machine, n *yaml.Node) (fsm.Rule, bool) {
	f, ok := c.fields(path, n, ruleKeys...)
	if !ok {
		return fsm.Rule{}, false
	}
	var r fsm.Rule
	ok = true
	name := func(field string) (string, *yaml.Node, bool) {
		e, found := f[field]
		if !found {
			return "", nil, false
		}
		s, good := c.str(join(path, field), e.val)
		if !good {
			ok = false
			return "", nil, false
		}
		if reason := checkName(s, namePattern); reason != "" {
			c.errAt(e.val, join(path, field), reason)
			ok = false
			return "", nil, false
		}
		return s, e.val, true
	}
	var deviceNode *fsm.Node
	if s, at, found := name("device"); found {
		r.Device = s
		switch deviceNode = m.Node(s); {
		case deviceNode == nil:
			c.errAt(at, join(path, "device"), fmt.Sprintf("unknown node %q of this machine", s))
			ok = false
		case deviceNode.Final:
			c.errAt(at, join(path, "device"), fmt.Sprintf("node %q is final: a device there is gone", s))
			ok = false
		}
	} else if _, given := f["device"]; !given {
		c.errAt(n, join(path, "device"), "required: a node of this device machine")
		ok = false
	}
	var jobNode *fsm.Node
	if s, at, found := name("job"); found {
		r.Job = s
		if s == fsm.NoJob {
			if jobs != nil && jobs.Node(s) != nil {
				c.errAt(at, join(path, "job"), fmt.Sprintf("job machine %q has a node %q, the name rules use for a device with no job: rename the node", jobs.ID, s))
				ok = false
			}
		} else if jobs != nil {
			switch jobNode = jobs.Node(s); {
			case jobNode == nil:
				c.errAt(at, join(path, "job"), fmt.Sprintf("unknown node %q of job machine %q", s, jobs.ID))
				ok = false
			case jobNode.Final:
				c.errAt(at, join(path, "job"), fmt.Sprintf("node %q of job machine %q is final: a finished job is no longer the device's", s, jobs.ID))
				ok = false
			}
		}
	} else if _, given := f["job"]; !given {
		c.errAt(n, join(path, "job"), "required: a node of the job machine")
		ok = false
	}
	if s, at, found := name("command"); found {
		r.Command = s
		if deviceNode != nil {
			switch t := deviceNode.Transitions[s]; {
			case t == nil:
				c.errAt(at, join(path, "command"), fmt.Sprintf("node %q has no transition %q (it has %v)", r.Device, s, deviceNode.Order))
				ok = false
			case !deviceNode.Blocking:
				c.errAt(at, join(path, "command"), fmt.Sprintf("node %q is not blocking: commands only go to a device waiting for one (mark the node blocking: true)", r.Device))
				ok = false
			}
		}
	}
	jobTransition := func(field string) string {
		s, at, found := name(field)
		if !found {
			return ""
		}
		if jobNode != nil {
			switch t := jobNode.Transitions[s]; {
			case t == nil:
				c.errAt(at, join(path, field), fmt.Sprintf("node %q of job machine %q has no transition %q (it has %v)", r.Job, jobs.ID, s, jobNode.Order))
				ok = false
			case t.Signal:
				c.errAt(at, join(path, field), fmt.Sprintf("transition %q of job machine %q is a signal: operators send it, the device's round does not", s, jobs.ID))
				ok = false
			}
		}
		return s
	}
	r.Transition = jobTransition("transition")
	if r.Forgotten = jobTransition("forgotten"); r.Forgotten != "" && r.Command == "" && r.Transition == "" {
		c.errAt(f["forgotten"].key, join(path, "forgotten"), "forgotten replaces the rule's command or transition when the device dropped the job: give the rule one")
		ok = false
	}
	if e, found := f["notice"]; found {
		if s, good := c.str(join(path, "notice"), e.val); good {
			if len(s) > MaxDescriptionBytes {
				c.errAt(e.val, join(path, "notice"), fmt.Sprintf("notice is %d bytes, longer than the limit of %d", len(s), MaxDescriptionBytes))
			}
			if r.Transition == "" {
				c.errAt(e.key, join(path, "notice"), "a notice is told when the rule's transition is recorded: give the rule a transition")
			}
			r.Notice = s
		}
	}
	if e, found := f["forgotten_notice"]; found {
		if s, good := c.str(join(path, "forgotten_notice"), e.val); good {
			if len(s) > MaxDescriptionBytes {
				c.errAt(e.val, join(path, "forgotten_notice"), fmt.Sprintf("notice is %d bytes, longer than the limit of %d", len(s), MaxDescriptionBytes))
			}
			if r.Forgotten == "" {
				c.errAt(e.key, join(path, "forgotten_notice"), "told when the forgotten transition is recorded: give the rule one")
			}
			r.ForgottenNotice = s
		}
	}
	if e, found := f["wait"]; found {
		if s, good := c.str(join(path, "wait"), e.val); good {
			if len(s) > MaxDescriptionBytes {
				c.errAt(e.val, join(path, "wait"), fmt.Sprintf("wait is %d bytes, longer than the limit of %d", len(s), MaxDescriptionBytes))
			}
			if r.Command != "" || r.Transition != "" || r.Forgotten != "" {
				c.errAt(e.key, join(path, "wait"), "a wait reason explains a rule that does nothing: drop it, or the rule's command and transition")
			}
			r.Wait = s
		}
	}
	if r.Job == fsm.NoJob && (r.Command != "" || r.Transition != "" || r.Forgotten != "") {
		c.errAt(n, path, fmt.Sprintf("a rule for job %q (a device with no job) can only wait: it has no job to move nor to send a command about", fsm.NoJob))
		ok = false
	}
	return r, ok
}
