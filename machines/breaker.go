package machines

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// breaker compiles a machine's breaker block: the scalar off, or a mapping
// whose omitted fields keep fsm.DefaultBreakerPolicy's values.
func (c *compiler) breaker(path string, n *yaml.Node) fsm.BreakerPolicy {
	p := fsm.DefaultBreakerPolicy()
	if v := deref(n); v != nil && v.Kind == yaml.ScalarNode {
		if v.ShortTag() == "!!str" && v.Value == breakerOff {
			return fsm.BreakerPolicy{Off: true}
		}
		c.errAt(n, path, fmt.Sprintf("must be %s or a mapping with %s, got %s", breakerOff, strings.Join(breakerKeys, ", "), describe(n)))
		return p
	}
	f, ok := c.fields(path, n, breakerKeys...)
	if !ok {
		return p
	}
	// small reads an integer field in [1, limit].
	small := func(name string, limit int64, set func(uint8)) bool {
		e, ok := f[name]
		if !ok {
			return true
		}
		fp := join(path, name)
		i, ok := c.integer(fp, e.val)
		if !ok {
			return false
		}
		if i < 1 || i > limit {
			c.errAt(e.val, fp, fmt.Sprintf("%s %d must be between 1 and %d", name, i, limit))
			return false
		}
		set(uint8(i))
		return true
	}
	windowOK := small("window", fsm.MaxBreakerWindow, func(v uint8) { p.Window = v })
	minOK := small("min_outcomes", fsm.MaxBreakerWindow, func(v uint8) { p.MinOutcomes = v })
	small("close_streak", fsm.MaxBreakerCloseStreak, func(v uint8) { p.CloseStreak = v })
	if windowOK && minOK && p.MinOutcomes > p.Window {
		if e, ok := f["min_outcomes"]; ok {
			c.errAt(e.val, join(path, "min_outcomes"), fmt.Sprintf("min_outcomes %d is more than window %d", p.MinOutcomes, p.Window))
		} else {
			c.errAt(f["window"].val, join(path, "window"), fmt.Sprintf("window %d is less than the default min_outcomes %d; set min_outcomes too", p.Window, p.MinOutcomes))
		}
	}
	openOK, closeOK := true, true
	if e, ok := f["open_share"]; ok {
		fp := join(path, "open_share")
		var s float64
		if s, openOK = c.number(fp, e.val); openOK {
			if !(s > 0 && s <= 1) {
				c.errAt(e.val, fp, fmt.Sprintf("open_share %v must be above 0 and at most 1", s))
				openOK = false
			} else {
				p.OpenShare = s
			}
		}
	}
	if e, ok := f["close_share"]; ok {
		fp := join(path, "close_share")
		var s float64
		if s, closeOK = c.number(fp, e.val); closeOK {
			if !(s >= 0 && s <= 1) {
				c.errAt(e.val, fp, fmt.Sprintf("close_share %v must be between 0 and 1", s))
				closeOK = false
			} else {
				p.CloseShare = s
			}
		}
	}
	if openOK && closeOK && p.CloseShare > p.OpenShare {
		if e, ok := f["close_share"]; ok {
			c.errAt(e.val, join(path, "close_share"), fmt.Sprintf("close_share %v is more than open_share %v", p.CloseShare, p.OpenShare))
		} else {
			c.errAt(f["open_share"].val, join(path, "open_share"), fmt.Sprintf("open_share %v is less than the default close_share %v; set close_share too", p.OpenShare, p.CloseShare))
		}
	}
	if e, ok := f["delay"]; ok {
		fp := join(path, "delay")
		if d, ok := c.duration(fp, e.val); ok {
			if d > fsm.MaxDelay {
				c.errAt(e.val, fp, fmt.Sprintf("delay %s is longer than the limit of %s", FormatDuration(d), FormatDuration(fsm.MaxDelay)))
			} else {
				p.Delay = d
			}
		}
	}
	return p
}
