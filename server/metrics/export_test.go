package metrics

import "time"

// Leases returns the grant-or-heartbeat and expiry times of the leases m
// follows, by instance, as [renewed, expires].
func (m *Metrics) Leases() map[string][2]time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string][2]time.Time, len(m.leases))
	for id, l := range m.leases {
		out[id] = [2]time.Time{l.renewed, l.expires}
	}
	return out
}
