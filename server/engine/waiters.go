package engine

import (
	"sync"
	"sync/atomic"

	"github.com/dfsmr/dfsmr/server/store"
)

// waiters are the long-polling Ready calls blocked right now, oldest first.
// Each instance that becomes READY wakes exactly one matching waiter that
// has not been woken yet, so a new instance never stampedes every idle
// worker. A waiter that leaves with a wake it did not use passes it on.
type waiters struct {
	mu    sync.Mutex
	list  []*waiter
	wakes atomic.Uint64 // wakes delivered to a waiter, ever
}

type waiter struct {
	f  store.ReadyFilter
	ch chan wake // holds one pending wake
}

// wake says where an instance became READY.
type wake struct{ machine, node string }

func (w *waiter) matches(machine, node string) bool {
	return (w.f.Machine == "" || w.f.Machine == machine) && (w.f.Node == "" || w.f.Node == node)
}

func (ws *waiters) add(f store.ReadyFilter) *waiter {
	w := &waiter{f: f, ch: make(chan wake, 1)}
	ws.mu.Lock()
	ws.list = append(ws.list, w)
	ws.mu.Unlock()
	return w
}

// remove unregisters w; a wake it received but did not act on goes to the
// next waiter that matches the instance it was about.
func (ws *waiters) remove(w *waiter) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for i, x := range ws.list {
		if x == w {
			ws.list = append(ws.list[:i], ws.list[i+1:]...)
			break
		}
	}
	select {
	case k := <-w.ch:
		ws.wakeLocked(k)
	default:
	}
}

func (ws *waiters) wakeOne(machine, node string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.wakeLocked(wake{machine, node})
}

func (ws *waiters) wakeLocked(k wake) {
	for _, w := range ws.list {
		if !w.matches(k.machine, k.node) {
			continue
		}
		select {
		case w.ch <- k:
			ws.wakes.Add(1)
			return
		default: // already woken: it will look again anyway
		}
	}
}

// Waiting returns how many long-polling Ready calls are blocked right now.
func (e *Engine) Waiting() int { return e.wait.count() }

// ReadyWakeups returns how many times a long-polling Ready call has been
// woken to look again, since the engine was made. Each instance that
// becomes READY wakes at most one.
func (e *Engine) ReadyWakeups() uint64 { return e.wait.wakes.Load() }

func (ws *waiters) count() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.list)
}
