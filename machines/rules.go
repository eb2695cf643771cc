package machines

import (
	"slices"
	"strings"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// The keys each mapping of a definition accepts, in the order error
// messages list them. The compiler refuses any other key, and the JSON
// Schema (Schema) is built from the same lists, so the two cannot drift.
var (
	machineKeys    = []string{"id", "kind", "description", "upgrade_strategy", "nodes", "reconcile", "breaker"}
	nodeKeys       = []string{"start", "final", "timeout", "retry", "transitions", "blocking"}
	timeoutKeys    = []string{"percentile", "min", "max"}
	retryKeys      = []string{"max_attempts", "backoff", "initial", "max", "jitter"}
	transitionKeys = []string{"to", "delay", "signal"}
	reconcileKeys  = []string{"jobs", "rules"}
	ruleKeys       = []string{"device", "job", "command", "transition", "notice", "wait", "forgotten", "forgotten_notice"}
	breakerKeys    = []string{"window", "min_outcomes", "open_share", "close_share", "close_streak", "delay"}
)

// breakerOff is the scalar that turns a machine's circuit breaker off
// (breaker: off).
const breakerOff = "off"

// enum is the names a string field accepts and what each compiles to, in
// the order error messages list them.
type enum[T any] []struct {
	name  string
	value T
}

// lookup returns the value named s.
func (e enum[T]) lookup(s string) (T, bool) {
	for _, v := range e {
		if v.name == s {
			return v.value, true
		}
	}
	var zero T
	return zero, false
}

// names lists the accepted names.
func (e enum[T]) names() []string {
	out := make([]string, len(e))
	for i, v := range e {
		out[i] = v.name
	}
	return out
}

// list is names joined for "want one of: ..." messages.
func (e enum[T]) list() string { return strings.Join(e.names(), ", ") }

var (
	kinds = enum[fsm.Kind]{
		{"workflow", fsm.KindWorkflow},
		{"device", fsm.KindDevice},
		{"job", fsm.KindJob},
	}
	upgradeStrategies = enum[fsm.UpgradeStrategy]{
		{"continue", fsm.UpgradeContinue},
		{"upgrade", fsm.UpgradeUpgrade},
		{"abort", fsm.UpgradeAbort},
	}
	backoffs = enum[fsm.Backoff]{
		{"fixed", fsm.BackoffFixed},
		{"linear", fsm.BackoffLinear},
		{"exponential", fsm.BackoffExponential},
	}
)

// allKeys is every key list, for the schema's completeness check.
func allKeys() map[string][]string {
	return map[string][]string{
		"machine": slices.Clone(machineKeys), "node": slices.Clone(nodeKeys), "timeout": slices.Clone(timeoutKeys),
		"retry": slices.Clone(retryKeys), "transition": slices.Clone(transitionKeys), "reconcile": slices.Clone(reconcileKeys),
		"rule": slices.Clone(ruleKeys), "breaker": slices.Clone(breakerKeys),
	}
}
