// Package sched keeps dfsmr's due times in memory: an indexed min-heap of
// instance id -> due time (Heap), and the one goroutine that owns it and
// keeps one timer armed at its head (Scheduler).
//
// The store stays the truth. The heap only says when to look: whoever is
// fired re-reads the instance and skips it when it is no longer due.
package sched

import (
	"time"

	"github.com/dfsmr/dfsmr/server/store"
)

// Heap is an indexed min-heap of due times keyed by instance id, earliest
// first (ties by id). It is not safe for concurrent use; the zero value is
// empty and ready.
type Heap struct {
	items []store.Due
	index map[string]int // id -> position in items
}

// Len returns how many ids are in the heap.
func (h *Heap) Len() int { return len(h.items) }

// Set inserts id at at, or moves it there when it is already in the heap.
func (h *Heap) Set(id string, at time.Time) {
	if h.index == nil {
		h.index = make(map[string]int)
	}
	if i, ok := h.index[id]; ok {
		h.items[i].At = at
		if !h.up(i) {
			h.down(i)
		}
		return
	}
	h.items = append(h.items, store.Due{At: at, ID: id})
	i := len(h.items) - 1
	h.index[id] = i
	h.up(i)
}

// Remove takes id out of the heap; it reports whether it was there.
func (h *Heap) Remove(id string) bool {
	i, ok := h.index[id]
	if !ok {
		return false
	}
	h.removeAt(i)
	return true
}

// Get returns the due time of id.
func (h *Heap) Get(id string) (time.Time, bool) {
	i, ok := h.index[id]
	if !ok {
		return time.Time{}, false
	}
	return h.items[i].At, true
}

// Peek returns the earliest entry; ok is false when the heap is empty.
func (h *Heap) Peek() (d store.Due, ok bool) {
	if len(h.items) == 0 {
		return store.Due{}, false
	}
	return h.items[0], true
}

// PopDue removes and returns, earliest first, up to max entries (all when
// max <= 0) whose time is at or before now.
func (h *Heap) PopDue(now time.Time, max int) []store.Due {
	var out []store.Due
	for len(h.items) > 0 && !h.items[0].At.After(now) && (max <= 0 || len(out) < max) {
		out = append(out, h.items[0])
		h.removeAt(0)
	}
	return out
}

func (h *Heap) less(i, j int) bool {
	a, b := &h.items[i], &h.items[j]
	if !a.At.Equal(b.At) {
		return a.At.Before(b.At)
	}
	return a.ID < b.ID
}

func (h *Heap) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.index[h.items[i].ID] = i
	h.index[h.items[j].ID] = j
}

func (h *Heap) removeAt(i int) {
	last := len(h.items) - 1
	delete(h.index, h.items[i].ID)
	if i != last {
		h.items[i] = h.items[last]
		h.index[h.items[i].ID] = i
	}
	h.items[last] = store.Due{}
	h.items = h.items[:last]
	if i < len(h.items) && !h.up(i) {
		h.down(i)
	}
}

// up moves i towards the root; it reports whether it moved.
func (h *Heap) up(i int) bool {
	moved := false
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h.swap(i, p)
		i, moved = p, true
	}
	return moved
}

func (h *Heap) down(i int) {
	n := len(h.items)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h.swap(i, m)
		i = m
	}
}
