package sched

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/store"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestHeapBasics(t *testing.T) {
	var h Heap
	if _, ok := h.Peek(); ok {
		t.Fatal("empty heap has a head")
	}
	h.Set("b", t0.Add(2*time.Second))
	h.Set("a", t0.Add(3*time.Second))
	h.Set("c", t0.Add(1*time.Second))
	if d, _ := h.Peek(); d.ID != "c" {
		t.Fatalf("head = %v", d)
	}
	h.Set("a", t0) // move earlier
	if d, _ := h.Peek(); d.ID != "a" {
		t.Fatalf("head after move = %v", d)
	}
	h.Set("a", t0.Add(time.Hour)) // move later
	if !h.Remove("b") || h.Remove("b") {
		t.Fatal("remove")
	}
	got := h.PopDue(t0.Add(time.Minute), 0)
	if len(got) != 1 || got[0].ID != "c" || h.Len() != 1 {
		t.Fatalf("PopDue = %v, len %d", got, h.Len())
	}
	if at, ok := h.Get("a"); !ok || !at.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Get(a) = %v %v", at, ok)
	}
}

func TestHeapTiesByID(t *testing.T) {
	var h Heap
	for _, id := range []string{"c", "a", "b"} {
		h.Set(id, t0)
	}
	var ids []string
	for _, d := range h.PopDue(t0, 0) {
		ids = append(ids, d.ID)
	}
	if !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Fatalf("order = %v", ids)
	}
}

// model is the obvious implementation: a map, sorted on demand.
type model map[string]time.Time

func (m model) sorted() []store.Due {
	var out []store.Due
	for id, at := range m {
		out = append(out, store.Due{At: at, ID: id})
	}
	slices.SortFunc(out, func(a, b store.Due) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

func TestHeapMatchesSortedModel(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 99))
		var h Heap
		m := model{}
		now := t0
		for step := range 5000 {
			id := fmt.Sprint("i", r.IntN(200))
			switch op := r.IntN(10); {
			case op < 5:
				at := t0.Add(time.Duration(r.IntN(10000)) * time.Millisecond)
				h.Set(id, at)
				m[id] = at
			case op < 7:
				_, want := m[id]
				if got := h.Remove(id); got != want {
					t.Fatalf("seed %d step %d: Remove(%s) = %v, want %v", seed, step, id, got, want)
				}
				delete(m, id)
			case op < 9:
				now = now.Add(time.Duration(r.IntN(500)) * time.Millisecond)
				max := r.IntN(5)
				got := h.PopDue(now, max)
				var want []store.Due
				for _, d := range m.sorted() {
					if d.At.After(now) || (max > 0 && len(want) == max) {
						break
					}
					want = append(want, d)
					delete(m, d.ID)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("seed %d step %d: PopDue(%v, %d) = %v, want %v", seed, step, now, max, got, want)
				}
			default:
				got, ok := h.Peek()
				s := m.sorted()
				if ok != (len(s) > 0) || (ok && got != s[0]) {
					t.Fatalf("seed %d step %d: Peek = %v %v, want %v", seed, step, got, ok, s)
				}
			}
			if h.Len() != len(m) {
				t.Fatalf("seed %d step %d: Len = %d, want %d", seed, step, h.Len(), len(m))
			}
		}
		// Drain: everything comes out in model order.
		if got, want := h.PopDue(t0.Add(time.Hour), 0), m.sorted(); !slices.Equal(got, want) {
			t.Fatalf("seed %d: final drain = %v, want %v", seed, got, want)
		}
	}
}
