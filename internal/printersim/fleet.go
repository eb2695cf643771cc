package printersim

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
)

// Fleet is a set of simulated printers of one profile, seeded from one
// seed: printer i draws its prints from PCG(seed, i) and its drops from
// PCG(seed, i | 1<<32), so each printer's luck is its own and the same
// seed gives the same printers.
type Fleet struct {
	// Printers are the printers, named prefix + index from 1 (zero-padded
	// to the width of the count, so that ids sort in index order).
	Printers []*Printer
	seed     uint64
}

// NewFleet returns n ready printers named prefix+"1".."n".
func NewFleet(prefix string, n int, prof Profile, seed uint64) *Fleet {
	f := &Fleet{seed: seed}
	width := len(strconv.Itoa(n))
	for i := range n {
		id := fmt.Sprintf("%s%0*d", prefix, width, i+1)
		f.Printers = append(f.Printers, NewPrinter(id, prof, rand.New(rand.NewPCG(seed, uint64(i)))))
	}
	return f
}

// IDs returns the set of the fleet's printer ids.
func (f *Fleet) IDs() map[string]bool {
	ids := make(map[string]bool, len(f.Printers))
	for _, p := range f.Printers {
		ids[p.ID()] = true
	}
	return ids
}

// Run runs every printer over l (see Run) until ctx ends, and returns once
// all have stopped: the printers may then be read. links, when set, gives
// printer i its own link (its own connection); otherwise all share l.
func (f *Fleet) Run(ctx context.Context, l Link, links func(i int) Link) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for i, p := range f.Printers {
		li := l
		if links != nil {
			li = links(i)
		}
		rng := rand.New(rand.NewPCG(f.seed, uint64(i)|1<<32))
		wg.Go(func() {
			if err := Run(ctx, li, p, rng); err != nil {
				mu.Lock()
				first = cmp.Or(first, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}
