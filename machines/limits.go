package machines

import (
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// Limits on a definition. They keep one definition cheap to parse, store and
// hold in memory, and they bound what a hostile client can make the server do
// with a single DefineMachine call.
const (
	// MaxSourceBytes is the largest definition accepted, checked before the
	// YAML parser sees a byte.
	MaxSourceBytes = 256 << 10
	// MaxNodes is the most nodes one machine may have.
	MaxNodes = 256
	// MaxTransitionsPerNode is the most transitions one node may have.
	MaxTransitionsPerNode = 64
	// MaxNameLen is the longest machine id, node name or transition name, in
	// bytes.
	MaxNameLen = 64
	// MaxDescriptionBytes is the longest description, in bytes.
	MaxDescriptionBytes = 1024
	// MaxAliases is the most YAML alias nodes (*name) a definition may use.
	// Aliases are handy for sharing a retry policy between nodes; more than a
	// few dozen only serve to inflate the document.
	MaxAliases = 32
	// MaxExpandedNodes bounds the number of YAML nodes that alias expansion
	// adds to the document: a few aliases nested into each other ("billion
	// laughs") otherwise expand to gigabytes. Nodes written out in the text
	// do not count; MaxSourceBytes bounds those.
	MaxExpandedNodes = 10_000
	// MaxErrors is the most validation errors Compile reports at once.
	MaxErrors = 50
	// MaxTimeout is the longest lease timeout (fixed, or the max of a
	// percentile timeout).
	MaxTimeout = 30 * 24 * time.Hour
)

// Defaults for what a definition leaves out.
const (
	// DefaultTimeout is the lease timeout of a non-final node that does not
	// set one. It is deliberately short: a worker that dies should not hold
	// its work for long, and long jobs say so (or heartbeat).
	DefaultTimeout = time.Minute
	// DefaultKind is the kind of a machine that does not set one.
	DefaultKind = fsm.KindWorkflow
	// DefaultUpgradeStrategy is the upgrade strategy of a machine that does
	// not set one: running instances finish on the version they started on.
	DefaultUpgradeStrategy = fsm.UpgradeContinue
)

// DefaultRetry returns the retry policy of a non-final node that does not set
// one; a partial retry block takes its missing fields from it: 10 attempts,
// exponential backoff from 1s capped at 5m, 10% jitter. It is a function, not
// a variable, so that no caller can change the defaults of every later
// compilation.
func DefaultRetry() fsm.Retry {
	return fsm.Retry{
		MaxAttempts: 10,
		Backoff:     fsm.BackoffExponential,
		Initial:     time.Second,
		Max:         5 * time.Minute,
		Jitter:      0.1,
	}
}

// IsBidiControl reports whether r is an explicit bidirectional formatting
// character: the embeddings and overrides U+202A..U+202E, the isolates
// U+2066..U+2069, the marks U+200E, U+200F and U+061C. The server refuses
// them in ids and names, and the CLI escapes them wherever it prints.
func IsBidiControl(r rune) bool {
	return (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069) ||
		r == 0x200E || r == 0x200F || r == 0x061C
}
