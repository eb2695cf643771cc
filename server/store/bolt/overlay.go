package bolt

import (
	"bytes"
	"slices"
	"sort"

	"go.etcd.io/bbolt"
)

// The writer computes a batch on a read transaction with the batch's own
// writes, and those of the write sets still on their way through the log,
// laid over it (an overlay), so that computing the next batch never waits
// for the last one to apply: reads see the state as it will be once every
// write set before applied, and nothing is written to the file until the
// log applies the batch (see writer.go).

// cursor is what the store's code uses of a bbolt cursor; *bbolt.Cursor
// implements it, and so does the merged cursor of an overlay.
type cursor interface {
	First() (key, value []byte)
	Last() (key, value []byte)
	Seek(seek []byte) (key, value []byte)
	Next() (key, value []byte)
	Prev() (key, value []byte)
}

// rbucket is a bucket as transactions read it.
type rbucket interface {
	Get(key []byte) []byte
	Cursor() cursor
	Sequence() uint64
}

// plain is a bucket of a read transaction, read as it is.
type plain struct{ b *bbolt.Bucket }

func (p plain) Get(key []byte) []byte { return p.b.Get(key) }
func (p plain) Cursor() cursor        { return p.b.Cursor() }
func (p plain) Sequence() uint64      { return p.b.Sequence() }

// overlay is the writes laid over a read transaction, by bucket.
type overlay struct {
	buckets map[string]*obucket
}

func newOverlay() *overlay { return &overlay{buckets: map[string]*obucket{}} }

// bucket returns the overlay of bucket name over base.
func (o *overlay) bucket(name []byte, base *bbolt.Bucket) *obucket {
	ob := o.buckets[string(name)]
	if ob == nil {
		ob = &obucket{vals: map[string]oval{}}
		o.buckets[string(name)] = ob
	}
	ob.base = base
	return ob
}

// oval is a key's value in an overlay; del marks a deleted key.
type oval struct {
	v   []byte
	del bool
}

// obucket is one bucket's overlay over its base: the keys written, in
// order, with their values (or deletions), and the sequence if set.
type obucket struct {
	base   *bbolt.Bucket
	keys   [][]byte // sorted; each also in vals
	vals   map[string]oval
	seq    uint64
	seqSet bool
	// version changes whenever keys does, so that cursors find their
	// place again.
	version int
}

func (ob *obucket) Get(key []byte) []byte {
	if v, ok := ob.vals[string(key)]; ok {
		if v.del {
			return nil
		}
		return v.v
	}
	return ob.base.Get(key)
}

func (ob *obucket) Sequence() uint64 {
	if ob.seqSet {
		return ob.seq
	}
	return ob.base.Sequence()
}

func (ob *obucket) set(key []byte, v oval) {
	if _, ok := ob.vals[string(key)]; !ok {
		key = bytes.Clone(key)
		i, _ := slices.BinarySearchFunc(ob.keys, key, bytes.Compare)
		ob.keys = slices.Insert(ob.keys, i, key)
		ob.version++
	}
	ob.vals[string(key)] = v
}

func (ob *obucket) put(key, value []byte) {
	if value == nil {
		value = []byte{} // an empty value, which Get tells from a missing key
	}
	ob.set(key, oval{v: value})
}

func (ob *obucket) delete(key []byte) { ob.set(key, oval{del: true}) }

func (ob *obucket) setSequence(n uint64) { ob.seq, ob.seqSet = n, true }

func (ob *obucket) Cursor() cursor { return &ocursor{ob: ob, bc: ob.base.Cursor()} }

// ocursor walks the merge of a bucket and its overlay, skipping deleted
// keys. Both sides are positioned relative to the current key: after a
// move forward, each at its first key at or after it; after a move back,
// each at its last key at or before it. A change of direction, or of the
// overlay's keys, places both again from the current key. Past either end
// it holds no key: a step back from past the last key gives the last key,
// a step on from before the first gives the first. (bbolt's cursor gives
// the same after a Seek past the last key, but the key before the last
// after Last and Next; the store's code stops at the first nil.)
type ocursor struct {
	ob      *obucket
	bc      *bbolt.Cursor
	bk, bv  []byte // the base side's key and value (bk nil: no more)
	oi      int    // the overlay side's index into ob.keys
	key     []byte // the current key; nil: none
	fwd     bool
	version int
}

func (c *ocursor) okey() []byte {
	if c.oi >= 0 && c.oi < len(c.ob.keys) {
		return c.ob.keys[c.oi]
	}
	return nil
}

func (c *ocursor) First() ([]byte, []byte) {
	c.bk, c.bv = c.bc.First()
	c.oi = 0
	return c.land(true)
}

func (c *ocursor) Seek(seek []byte) ([]byte, []byte) {
	c.bk, c.bv = c.bc.Seek(seek)
	c.oi = sort.Search(len(c.ob.keys), func(i int) bool { return bytes.Compare(c.ob.keys[i], seek) >= 0 })
	return c.land(true)
}

func (c *ocursor) Last() ([]byte, []byte) {
	c.bk, c.bv = c.bc.Last()
	c.oi = len(c.ob.keys) - 1
	return c.land(false)
}

func (c *ocursor) Next() ([]byte, []byte) {
	if c.key == nil {
		if !c.fwd {
			return c.First() // back past the first key: the first again
		}
		return nil, nil
	}
	if !c.fwd || c.version != c.ob.version {
		// Both sides at their first key after the current one.
		cur := c.key
		c.bk, c.bv = c.bc.Seek(cur)
		if c.bk != nil && bytes.Equal(c.bk, cur) {
			c.bk, c.bv = c.bc.Next()
		}
		c.oi = sort.Search(len(c.ob.keys), func(i int) bool { return bytes.Compare(c.ob.keys[i], cur) > 0 })
		return c.land(true)
	}
	c.step(true)
	return c.land(true)
}

func (c *ocursor) Prev() ([]byte, []byte) {
	if c.key == nil {
		if c.fwd {
			return c.Last() // past the last key: the last again
		}
		return nil, nil
	}
	if c.fwd || c.version != c.ob.version {
		// Both sides at their last key before the current one.
		cur := c.key
		if k, _ := c.bc.Seek(cur); k == nil {
			c.bk, c.bv = c.bc.Last()
		} else {
			c.bk, c.bv = c.bc.Prev()
		}
		c.oi = sort.Search(len(c.ob.keys), func(i int) bool { return bytes.Compare(c.ob.keys[i], cur) >= 0 }) - 1
		return c.land(false)
	}
	c.step(false)
	return c.land(false)
}

// step moves the sides that are at the current key past it.
func (c *ocursor) step(fwd bool) {
	if c.bk != nil && bytes.Equal(c.bk, c.key) {
		if fwd {
			c.bk, c.bv = c.bc.Next()
		} else {
			c.bk, c.bv = c.bc.Prev()
		}
	}
	if ok := c.okey(); ok != nil && bytes.Equal(ok, c.key) {
		if fwd {
			c.oi++
		} else {
			c.oi--
		}
	}
}

// land makes current the first of the two sides' keys in the direction
// of the move (the smaller forward, the larger back), skipping the
// overlay's deletions.
func (c *ocursor) land(fwd bool) ([]byte, []byte) {
	c.fwd, c.version = fwd, c.ob.version
	for {
		ok := c.okey()
		if c.bk == nil && ok == nil {
			c.key = nil
			return nil, nil
		}
		// The base side is current when the overlay side has no key or
		// the base's comes first; on a tie the overlay's value wins.
		base := ok == nil
		if c.bk != nil && ok != nil {
			cmp := bytes.Compare(c.bk, ok)
			base = fwd && cmp < 0 || !fwd && cmp > 0
		}
		if base {
			c.key = c.bk
			return c.bk, c.bv
		}
		v := c.ob.vals[string(ok)]
		c.key = ok
		if !v.del {
			return ok, v.v
		}
		c.step(fwd)
	}
}
