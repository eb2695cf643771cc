package machines

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// fingerprintFormat versions the encoding hashed by Fingerprint. Change it
// whenever the encoding changes, so that old and new fingerprints can never
// be mistaken for each other.
const fingerprintFormat = "dfsmr.machine.fingerprint.v1"

// Fingerprint returns a stable hex SHA-256 of the compiled content of m.
//
// It hashes what the machine means, not how it was written: whitespace,
// comments, key order, aliases and explicitly written defaults make no
// difference, and neither does the order of nodes or transitions (nodes and
// transitions are hashed sorted by name), because reordering a definition
// changes nothing an instance can do. Version is excluded: the store uses the
// fingerprint to decide whether a definition is a new version at all. The
// description is included: it is content a user expects to see stored.
func Fingerprint(m *fsm.Machine) string {
	if m == nil {
		m = &fsm.Machine{}
	}
	var b []byte
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	num := func(u uint64) { b = binary.AppendUvarint(b, u) }
	dur := func(d time.Duration) { b = binary.AppendVarint(b, int64(d)) }
	float := func(f float64) { num(math.Float64bits(f)) }
	flag := func(v bool) {
		if v {
			num(1)
		} else {
			num(0)
		}
	}

	str(fingerprintFormat)
	str(m.ID)
	num(uint64(m.Kind))
	num(uint64(m.UpgradeStrategy))
	str(m.Description)
	str(m.Start)
	names := sortedKeys(m.Nodes)
	num(uint64(len(names)))
	for _, name := range names {
		str(name)
		n := m.Nodes[name]
		if n == nil {
			flag(false)
			continue
		}
		flag(true)
		str(n.Name)
		flag(n.Final)
		dur(n.Timeout.Fixed)
		float(n.Timeout.Percentile)
		dur(n.Timeout.Min)
		dur(n.Timeout.Max)
		num(uint64(uint32(n.Retry.MaxAttempts)))
		num(uint64(n.Retry.Backoff))
		dur(n.Retry.Initial)
		dur(n.Retry.Max)
		float(n.Retry.Jitter)
		tnames := sortedKeys(n.Transitions)
		num(uint64(len(tnames)))
		for _, tn := range tnames {
			str(tn)
			t := n.Transitions[tn]
			if t == nil {
				flag(false)
				continue
			}
			flag(true)
			str(t.Name)
			str(t.To)
			dur(t.Delay)
			flag(t.Signal)
		}
	}
	// Device parts come last and only when present, so that the
	// fingerprints of machines without them are what they always were.
	var blocking []string
	for _, name := range names {
		if n := m.Nodes[name]; n != nil && n.Blocking {
			blocking = append(blocking, name)
		}
	}
	if len(blocking) > 0 || m.Reconcile != nil {
		str("device")
		num(uint64(len(blocking)))
		for _, name := range blocking {
			str(name)
		}
		if m.Reconcile == nil {
			flag(false)
		} else {
			flag(true)
			str(m.Reconcile.Jobs)
			// Rule order does not matter (no two rules share a pair), so
			// they are hashed sorted like nodes.
			rules := slices.Clone(m.Reconcile.Rules)
			slices.SortFunc(rules, func(a, b fsm.Rule) int {
				if c := strings.Compare(a.Device, b.Device); c != 0 {
					return c
				}
				return strings.Compare(a.Job, b.Job)
			})
			num(uint64(len(rules)))
			for _, r := range rules {
				str(r.Device)
				str(r.Job)
				str(r.Command)
				str(r.Transition)
				str(r.Notice)
			}
			// Wait reasons and forgotten transitions came later: tables
			// without any keep the fingerprint they always had.
			for _, r := range rules {
				if r.Forgotten != "" {
					str("forgotten")
					str(r.Device)
					str(r.Job)
					str(r.Forgotten)
					str(r.ForgottenNotice)
				}
				if r.Wait != "" {
					str("wait")
					str(r.Device)
					str(r.Job)
					str(r.Wait)
				}
			}
		}
	}
	// Likewise a breaker policy other than the default: a machine without
	// a breaker block, or with one that spells out the defaults, keeps
	// the fingerprint it always had.
	if p := m.Breaker; !p.IsDefault() {
		str("breaker")
		flag(p.Off)
		if !p.Off {
			num(uint64(p.Window))
			num(uint64(p.MinOutcomes))
			float(p.OpenShare)
			float(p.CloseShare)
			num(uint64(p.CloseStreak))
			dur(p.Delay)
		}
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
