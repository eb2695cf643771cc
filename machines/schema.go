package machines

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// SchemaFile is where the JSON Schema of a definition is committed, next to
// the bundled definitions; editors that run yaml-language-server find it
// through each file's "# yaml-language-server: $schema=" line.
const SchemaFile = "machine.schema.json"

// durationPattern matches what the compiler's duration accepts as a
// string: what time.ParseDuration reads and is not negative ("0", "+5s",
// and zeros with a minus sign included). The integer 0 is accepted beside
// it. It cannot check magnitudes: MaxTimeout and fsm.MaxDelay are left to
// the compiler.
const durationPattern = `^([-+]?0|\+?(` + durationNumber + durationUnit + `)+|-(` + durationZero + durationUnit + `)+)$`

const (
	durationNumber = `([0-9]+(\.[0-9]*)?|\.[0-9]+)`
	durationZero   = `(0+(\.0*)?|\.0+)`
	durationUnit   = `(ns|us|µs|μs|ms|s|m|h)`
)

// obj is one JSON Schema object.
type obj = map[string]any

// keyDocs documents every key of every mapping of a definition, by
// "mapping.key" (mappings named as in allKeys). Schema refuses to build
// when a compiler key has no entry here or an entry names no compiler key.
var keyDocs = map[string]string{
	"machine.id":               "The machine id: lowercase letters, digits, _ and -, starting with a letter, at most 64 bytes.",
	"machine.kind":             "Who drives the instances: workflow (workers lease them), device (a connected device reports its node) or job (the jobs of devices). Default: workflow.",
	"machine.description":      "Free text shown with the machine.",
	"machine.upgrade_strategy": "What running instances do when a newer version is defined: continue on their version, upgrade to the new one (keeping their node), or abort. Default: continue.",
	"machine.nodes":            "The states, by name. Exactly one is start: true; at least one is final: true, reachable from every node.",
	"machine.reconcile":        "A device machine's reconcile table: for each pair of device node and job node, the command to send and the job transition to record.",
	"machine.breaker":          "The circuit breaker of the machine's attempts: off, or thresholds; omitted fields keep their defaults.",

	"node.start":       "The node new instances start in; exactly one node has it.",
	"node.final":       "Instances that reach this node are finished; a final node has no timeout, retry or transitions.",
	"node.timeout":     "How long a lease lasts: a duration (0: never expires), or a percentile block learned from recent leases. Default: 1m.",
	"node.retry":       "What a failed attempt (an error edge back into the node, or a lease timeout) does; omitted fields keep their defaults.",
	"node.transitions": "The named moves out of the node: a target node name, or a block with to, delay and signal.",
	"node.blocking":    "Device machines only: the device waits in this node for a command; commands are only sent to a device in a blocking node.",

	"timeout.percentile": "The percentile (0 < p < 100) of recent successful lease durations to use as the timeout.",
	"timeout.min":        "The shortest learned timeout, used until enough leases have been seen.",
	"timeout.max":        "The longest learned timeout.",

	"retry.max_attempts": "Attempts before the instance goes to dfsmr.failed; 0: unlimited. Default: 10.",
	"retry.backoff":      "How the wait between attempts grows. Default: exponential.",
	"retry.initial":      "The first wait. Default: 1s.",
	"retry.max":          "The longest wait. Default: 5m.",
	"retry.jitter":       "The share (0 to 1) by which each wait is spread at random. Default: 0.1.",

	"transition.to":     "The target node.",
	"transition.delay":  "Park the instance in WAITING for this long before the target node is offered.",
	"transition.signal": "An external event: applied with SignalInstance, without a lease.",

	"reconcile.jobs":  "The id of the job machine (kind: job) whose instances are this device's jobs.",
	"reconcile.rules": "The rules; no two share a device node and a job node.",

	"rule.device":           "A node of this device machine.",
	"rule.job":              "A node of the job machine.",
	"rule.command":          "The device transition to send as a command; the device node must be blocking.",
	"rule.transition":       "The job transition to record (not a signal).",
	"rule.notice":           "Text for an operator, recorded with the transition.",
	"rule.forgotten":        "The job transition to record instead of the command when the device carried the command out already and forgot the job.",
	"rule.forgotten_notice": "Text for an operator, recorded with the forgotten transition.",
	"rule.wait":             "Why a rule with neither command nor transition does nothing: what it waits for, or why the pair cannot happen.",

	"breaker.window":       "How many recent attempt outcomes the breaker keeps.",
	"breaker.min_outcomes": "How many outcomes the window needs before the breaker may open.",
	"breaker.open_share":   "The failure share at which the breaker opens.",
	"breaker.close_share":  "The failure share below which an open breaker closes (at most open_share).",
	"breaker.close_streak": "How many successes in a row close an open breaker.",
	"breaker.delay":        "What every retry waits on top of its node's backoff while the breaker is open.",
}

// Schema returns the JSON Schema (draft-07) of a machine definition,
// indented, with a final newline: what SchemaFile holds. It is built from
// the compiler's own key lists, enums, name patterns, limits and defaults,
// so an editor checks what DefineMachine checks, short of the checks that
// look across nodes (start, reachability, targets) and across machines.
func Schema() ([]byte, error) {
	keys := allKeys()
	var missing []string
	for mapping, names := range keys {
		for _, k := range names {
			if keyDocs[mapping+"."+k] == "" {
				missing = append(missing, mapping+"."+k)
			}
		}
	}
	for k := range keyDocs {
		mapping, name, _ := strings.Cut(k, ".")
		if !slices.Contains(keys[mapping], name) {
			missing = append(missing, k+" (documented, unknown to the compiler)")
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("machines: schema: keys without documentation: %s", strings.Join(missing, ", "))
	}

	def := DefaultRetry()
	br := fsm.DefaultBreakerPolicy()
	ref := func(name string) obj { return obj{"$ref": "#/definitions/" + name} }
	pattern := func(p string) obj { return obj{"type": "string", "pattern": p} }
	// mapping is an object of exactly the compiler's keys.
	var uncovered []string
	mapping := func(name string, props obj, required ...string) obj {
		for k, v := range props {
			if keyDocs[name+"."+k] == "" {
				uncovered = append(uncovered, name+"."+k+" (not a compiler key)")
			}
			v.(obj)["description"] = keyDocs[name+"."+k]
		}
		for _, k := range keys[name] {
			if props[k] == nil {
				uncovered = append(uncovered, name+"."+k)
			}
		}
		o := obj{"type": "object", "additionalProperties": false, "properties": props}
		if len(required) > 0 {
			o["required"] = required
		}
		return o
	}
	enumOf := func(names []string, dflt string) obj { return obj{"type": "string", "enum": names, "default": dflt} }
	durationWithDefault := func(d string) obj { return obj{"allOf": []any{ref("duration")}, "default": d} }

	schema := obj{
		"$schema":     "http://json-schema.org/draft-07/schema#",
		"title":       "dfsmr machine definition",
		"description": "One state machine definition, as DefineMachine and the bundled machines take it. Generated from the compiler (machines.Schema); do not edit.",
	}
	root := mapping("machine", obj{
		"id":               pattern(idPattern.String()),
		"kind":             enumOf(kinds.names(), DefaultKind.String()),
		"description":      obj{"type": "string", "maxLength": MaxDescriptionBytes},
		"upgrade_strategy": enumOf(upgradeStrategies.names(), DefaultUpgradeStrategy.String()),
		"nodes": obj{"type": "object", "minProperties": 1, "maxProperties": MaxNodes,
			"propertyNames": ref("name"), "additionalProperties": ref("node")},
		"reconcile": ref("reconcile"),
		"breaker":   obj{"oneOf": []any{obj{"const": breakerOff}, ref("breakerPolicy")}},
	}, "id", "nodes")
	for k, v := range root {
		schema[k] = v
	}
	schema["definitions"] = obj{
		"name":     obj{"type": "string", "pattern": namePattern.String(), "description": "A node or transition name: letters, digits, _ and -, starting with a letter, at most 64 bytes."},
		"duration": obj{"oneOf": []any{pattern(durationPattern), obj{"const": 0}}, "description": "A Go duration such as 30s, 1m30s or 2h; only 0 may go without a unit."},
		"node": mapping("node", obj{
			"start":    obj{"type": "boolean", "default": false},
			"final":    obj{"type": "boolean", "default": false},
			"blocking": obj{"type": "boolean", "default": false},
			"timeout": obj{"oneOf": []any{ref("duration"), mapping("timeout", obj{
				"percentile": obj{"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
				"min":        ref("duration"),
				"max":        ref("duration"),
			}, timeoutKeys...)}, "default": FormatDuration(DefaultTimeout)},
			"retry": mapping("retry", obj{
				"max_attempts": obj{"type": "integer", "minimum": 0, "maximum": math.MaxInt32, "default": def.MaxAttempts},
				"backoff":      enumOf(backoffs.names(), def.Backoff.String()),
				"initial":      durationWithDefault(FormatDuration(def.Initial)),
				"max":          durationWithDefault(FormatDuration(def.Max)),
				"jitter":       obj{"type": "number", "minimum": 0, "maximum": 1, "default": def.Jitter},
			}),
			"transitions": obj{"type": "object", "maxProperties": MaxTransitionsPerNode, "propertyNames": ref("name"),
				"additionalProperties": obj{"oneOf": []any{ref("name"), mapping("transition", obj{
					"to":     ref("name"),
					"delay":  ref("duration"),
					"signal": obj{"type": "boolean", "default": false},
				}, "to")}}},
		}),
		"reconcile": mapping("reconcile", obj{
			"jobs":  pattern(idPattern.String()),
			"rules": obj{"type": "array", "minItems": 1, "maxItems": MaxRules, "items": ref("rule")},
		}, reconcileKeys...),
		"rule": mapping("rule", obj{
			"device":           ref("name"),
			"job":              ref("name"),
			"command":          ref("name"),
			"transition":       ref("name"),
			"notice":           obj{"type": "string", "maxLength": MaxDescriptionBytes},
			"wait":             obj{"type": "string", "maxLength": MaxDescriptionBytes},
			"forgotten":        ref("name"),
			"forgotten_notice": obj{"type": "string", "maxLength": MaxDescriptionBytes},
		}, "device", "job"),
		"breakerPolicy": mapping("breaker", obj{
			"window":       obj{"type": "integer", "minimum": 1, "maximum": fsm.MaxBreakerWindow, "default": br.Window},
			"min_outcomes": obj{"type": "integer", "minimum": 1, "maximum": fsm.MaxBreakerWindow, "default": br.MinOutcomes},
			"open_share":   obj{"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": br.OpenShare},
			"close_share":  obj{"type": "number", "minimum": 0, "maximum": 1, "default": br.CloseShare},
			"close_streak": obj{"type": "integer", "minimum": 1, "maximum": fsm.MaxBreakerCloseStreak, "default": br.CloseStreak},
			"delay":        durationWithDefault(FormatDuration(br.Delay)),
		}),
	}
	if len(uncovered) > 0 {
		sort.Strings(uncovered)
		return nil, fmt.Errorf("machines: schema: keys without a schema: %s", strings.Join(uncovered, ", "))
	}
	out, err := json.MarshalIndent(schema, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("machines: schema: %w", err)
	}
	return append(out, '\n'), nil
}
