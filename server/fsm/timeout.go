package fsm

import (
	"math"
	"slices"
	"time"
)

// MinSamples is how many recent successful lease durations a percentile
// timeout needs before it is learned from them; with fewer, Min is used.
const MinSamples = 20

// Lease returns how long a lease in a node with this timeout lasts, given
// the node's recent successful lease durations in any order (samples is not
// modified; only percentile timeouts look at it).
//
//   - Percentile zero: Fixed (zero means the lease never expires).
//   - Fewer than MinSamples samples: Min.
//   - Otherwise the Percentile-th percentile of the samples by the
//     nearest-rank method (the smallest sample that at least Percentile
//     percent of the samples do not exceed, so always one of the samples),
//     clamped to [Min, Max]. A zero Max sets no upper bound.
func (t Timeout) Lease(samples []time.Duration) time.Duration {
	if t.Percentile <= 0 {
		return t.Fixed
	}
	if len(samples) < MinSamples {
		return t.Min
	}
	d := percentile(samples, t.Percentile)
	if t.Max > 0 && d > t.Max {
		d = t.Max
	}
	if d < t.Min {
		d = t.Min
	}
	return d
}

// percentile returns the nearest-rank p-th percentile of a non-empty
// samples: the sample of rank ceil(p/100 * n), counting from 1 in ascending
// order, with the rank kept within [1, n].
func percentile(samples []time.Duration, p float64) time.Duration {
	n := len(samples)
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	return sorted[rank-1]
}
