package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"

	"github.com/dfsmr/dfsmr/server/store"
)

// The file check reads the bbolt file with plain reads, never through a
// memory map, and validates everything bbolt would trust: the meta pages
// (magic, version, checksum), the file's length against the page count the
// meta promises, and every page reachable from the root (page id in its
// header, type, element offsets and sizes inside the page, child page ids
// below the high-water mark and visited once, keys in order). bbolt reads
// pages through a memory map and follows offsets without bounds checks, so
// a damaged page makes it panic, read garbage or fault (SIGSEGV, or SIGBUS
// past the end of a truncated file); after this walk it meets none.

// bbolt's on-disk layout (go.etcd.io/bbolt/internal/common).
const (
	pageHeaderSize    = 16 // id u64, flags u16, count u16, overflow u32
	elementSize       = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	bucketHeaderSize  = 16 // root pgid u64, sequence u64
	metaSize          = 64 // magic, version, pageSize, flags, root, sequence, freelist, pgid, txid, checksum
	metaChecksumAt    = 56
	boltMagic         = 0xED0CDAED
	boltVersion       = 2
	branchPageFlag    = 0x01
	leafPageFlag      = 0x02
	freelistPageFlag  = 0x10
	bucketLeafFlag    = 0x01
	pgidNoFreelist    = ^uint64(0)
	maxTreeDepth      = 64
	maxProblemsListed = 20
)

// boltMeta is the part of a meta page the check uses.
type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64 // high-water mark: pages [0, pgid) are in use or free
	txid     uint64
}

// parseMeta decodes and validates the meta page at the start of p.
func parseMeta(p []byte) (boltMeta, string) {
	if len(p) < pageHeaderSize+metaSize {
		return boltMeta{}, "short page"
	}
	m := p[pageHeaderSize : pageHeaderSize+metaSize]
	le := binary.LittleEndian
	switch {
	case le.Uint32(m[0:]) != boltMagic:
		return boltMeta{}, "not a bbolt meta page (bad magic)"
	case le.Uint32(m[4:]) != boltVersion:
		return boltMeta{}, fmt.Sprintf("bbolt format version %d, want %d", le.Uint32(m[4:]), boltVersion)
	}
	h := fnv.New64a()
	h.Write(m[:metaChecksumAt])
	if h.Sum64() != le.Uint64(m[metaChecksumAt:]) {
		return boltMeta{}, "checksum mismatch"
	}
	meta := boltMeta{
		pageSize: le.Uint32(m[8:]),
		root:     le.Uint64(m[16:]),
		freelist: le.Uint64(m[32:]),
		pgid:     le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
	}
	if meta.pageSize < 1024 || meta.pageSize > 1<<20 || meta.pageSize&(meta.pageSize-1) != 0 {
		return boltMeta{}, fmt.Sprintf("page size %d", meta.pageSize)
	}
	return meta, ""
}

// fileCheck is the state of one walk over a file.
type fileCheck struct {
	f        *os.File
	path     string
	size     int64
	meta     boltMeta
	metaNote string // set when one meta page is bad and the other was used
	seen     []uint64
	pages    int

	// sealed is whether the file's records carry checksums.
	sealed bool
	// structural problems make the file unusable; record problems are
	// damaged records in an otherwise sound file.
	structural []string
	records    []*store.CorruptError
	// counts is the number of keys per top-level bucket.
	counts map[string]int
	// present are the top-level buckets the file has.
	present map[string]bool
	// onLeaf, when set, sees every key and value of the top-level buckets.
	onLeaf func(bucket string, k, v []byte)
}

func (c *fileCheck) structuralf(format string, args ...any) {
	c.structural = append(c.structural, fmt.Sprintf(format, args...))
}

// errEmpty is the reason given for a 0-byte file.
var errEmpty = errors.New("the file is empty (0 bytes)")

// checkFile walks the file at path, open as f. It returns an error for a
// file it cannot begin to walk; problems found on the way are in the
// result.
func checkFile(f *os.File, path string, onLeaf func(bucket string, k, v []byte)) (*fileCheck, error) {
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	c := &fileCheck{f: f, path: path, size: info.Size(), counts: map[string]int{}, present: map[string]bool{}, onLeaf: onLeaf}
	if c.size == 0 {
		return nil, errEmpty
	}
	if err := c.readMetas(); err != nil {
		return nil, err
	}
	if need := int64(c.meta.pgid) * int64(c.meta.pageSize); c.meta.pgid > uint64(c.size) || c.size < need {
		return nil, fmt.Errorf("the file is %d bytes but its meta page counts %d pages of %d bytes (%d bytes): it is truncated", c.size, c.meta.pgid, c.meta.pageSize, need)
	}
	c.seen = make([]uint64, (c.meta.pgid+63)/64)
	c.mark(0, 1) // the meta pages
	if c.meta.freelist != pgidNoFreelist {
		c.checkFreelist()
	}
	c.walkRoot()
	return c, nil
}

// readMetas picks the valid meta page with the highest transaction id, as
// bbolt does.
func (c *fileCheck) readMetas() error {
	buf := make([]byte, 4096)
	n, err := c.f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	m0, bad0 := parseMeta(buf[:n])
	// The second meta page is one page in; with meta 0 damaged, try the
	// page sizes bbolt can have been created with.
	sizes := []uint32{4096, 8192, 16384, 32768, 65536, 1024, 2048}
	if bad0 == "" {
		sizes = []uint32{m0.pageSize}
	}
	var m1 boltMeta
	bad1 := "beyond the end of the file"
	for _, ps := range sizes {
		n, err := c.f.ReadAt(buf, int64(ps))
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if m, bad := parseMeta(buf[:n]); bad == "" && m.pageSize == ps {
			m1, bad1 = m, ""
			break
		} else if n > 0 {
			bad1 = bad
			if bad == "" {
				bad1 = fmt.Sprintf("page size %d at offset %d", m.pageSize, ps)
			}
		}
	}
	switch {
	case bad0 != "" && bad1 != "":
		return fmt.Errorf("neither meta page is valid (page 0: %s; page 1: %s): not a dfsmr database, or its first pages are damaged", bad0, bad1)
	case bad0 != "":
		c.meta, c.metaNote = m1, "meta page 0: "+bad0
	case bad1 != "":
		c.meta, c.metaNote = m0, "meta page 1: "+bad1
	case m1.txid > m0.txid:
		c.meta = m1
	default:
		c.meta = m0
	}
	if bad0 == "" && bad1 == "" && m0.pageSize != m1.pageSize {
		return fmt.Errorf("the meta pages disagree on the page size (%d and %d)", m0.pageSize, m1.pageSize)
	}
	return nil
}

// mark records pages [id, id+overflow] as reachable; false when one is out
// of range or was reached before.
func (c *fileCheck) mark(id uint64, overflow uint64) bool {
	if id >= c.meta.pgid || overflow >= c.meta.pgid-id {
		c.structuralf("page %d (+%d overflow) is beyond the high-water mark %d", id, overflow, c.meta.pgid)
		return false
	}
	for p := id; p <= id+overflow; p++ {
		if c.seen[p/64]&(1<<(p%64)) != 0 {
			c.structuralf("page %d is reached twice", p)
			return false
		}
		c.seen[p/64] |= 1 << (p % 64)
	}
	return true
}

// pageType tells whether flags are exactly one of the page types in want:
// bbolt asserts one type flag and nothing else (a panic on a goroutine of
// its own, which no recover catches), so a stray bit must be found here.
func pageType(flags, want uint16) bool {
	return flags&want != 0 && flags&(flags-1) == 0
}

// page reads page id with its overflow pages and checks its header.
func (c *fileCheck) page(id uint64, wantFlags uint16) []byte {
	ps := int64(c.meta.pageSize)
	if id >= c.meta.pgid {
		c.structuralf("page %d is beyond the high-water mark %d", id, c.meta.pgid)
		return nil
	}
	p := make([]byte, ps)
	if _, err := c.f.ReadAt(p, int64(id)*ps); err != nil {
		c.structuralf("page %d: %v", id, err)
		return nil
	}
	le := binary.LittleEndian
	overflow := uint64(le.Uint32(p[12:]))
	switch {
	case le.Uint64(p) != id:
		c.structuralf("page %d holds page id %d", id, le.Uint64(p))
		return nil
	case !pageType(le.Uint16(p[8:]), wantFlags):
		c.structuralf("page %d has type %#x, want %#x", id, le.Uint16(p[8:]), wantFlags)
		return nil
	case !c.mark(id, overflow):
		return nil
	}
	c.pages += int(overflow) + 1
	if overflow > 0 {
		p = make([]byte, int64(overflow+1)*ps)
		if _, err := c.f.ReadAt(p, int64(id)*ps); err != nil {
			c.structuralf("page %d: %v", id, err)
			return nil
		}
	}
	return p
}

func (c *fileCheck) checkFreelist() {
	p := c.page(c.meta.freelist, freelistPageFlag)
	if p == nil {
		return
	}
	count := uint64(binary.LittleEndian.Uint16(p[10:]))
	start := uint64(pageHeaderSize)
	if count == 0xFFFF { // the real count is in the first element
		if len(p) < pageHeaderSize+8 {
			c.structuralf("freelist page %d: short", c.meta.freelist)
			return
		}
		count = binary.LittleEndian.Uint64(p[pageHeaderSize:])
		start += 8
	}
	if count > uint64(len(p))/8 || start+count*8 > uint64(len(p)) {
		c.structuralf("freelist page %d: %d ids do not fit", c.meta.freelist, count)
		return
	}
	for i := range count {
		if id := binary.LittleEndian.Uint64(p[start+i*8:]); id < 2 || id >= c.meta.pgid {
			c.structuralf("freelist page %d: free page id %d out of range", c.meta.freelist, id)
			return
		}
	}
}

// walkRoot walks the root bucket, whose entries are the top-level buckets.
// The meta bucket goes first: it says whether records are sealed.
func (c *fileCheck) walkRoot() {
	type sub struct{ name, header []byte }
	var subs []sub
	c.walkTree(c.meta.root, 0, nil, nil, func(k, v []byte, flags uint32) {
		if flags&bucketLeafFlag == 0 {
			c.structuralf("the root holds key %q that is not a bucket", k)
			return
		}
		subs = append(subs, sub{append([]byte(nil), k...), append([]byte(nil), v...)})
	})
	for i, s := range subs {
		if bytes.Equal(s.name, bucketMeta) {
			subs[0], subs[i] = subs[i], subs[0]
		}
	}
	for _, s := range subs {
		name := string(s.name)
		c.present[name] = true
		c.walkBucket(s.header, 1, func(k, v []byte, flags uint32) {
			c.counts[name]++
			if flags&bucketLeafFlag != 0 {
				c.structuralf("bucket %s holds a nested bucket %q", name, k)
				return
			}
			if name == string(bucketMeta) && bytes.Equal(k, keyChecksums) {
				c.sealed = bytes.Equal(v, checksumCRC32C)
			}
			if c.sealed && sealedBuckets[name] {
				if _, reason := unseal(k, v); reason != "" {
					c.records = append(c.records, &store.CorruptError{Path: c.path, Bucket: name, Key: append([]byte(nil), k...), Reason: reason})
				}
			}
			if c.onLeaf != nil {
				c.onLeaf(name, k, v)
			}
		})
	}
}

// walkBucket walks the bucket whose header (and inline page) is v.
func (c *fileCheck) walkBucket(v []byte, depth int, leaf func(k, v []byte, flags uint32)) {
	if len(v) < bucketHeaderSize {
		c.structuralf("bucket header of %d bytes", len(v))
		return
	}
	root := binary.LittleEndian.Uint64(v)
	if root != 0 {
		c.walkTree(root, depth, nil, nil, leaf)
		return
	}
	// An inline bucket: its one leaf page follows the header.
	c.leaf(v[bucketHeaderSize:], "inline page", nil, nil, leaf)
}

// walkTree walks the subtree at page id, whose keys must lie in [lo, hi)
// (nil: unbounded), the bounds its parent branch element and the next one
// set: bbolt checks the same when it rebuilds the freelist at open, and it
// must never be the first to find a damaged page (it panics then, with a
// goroutine still reading the file).
func (c *fileCheck) walkTree(id uint64, depth int, lo, hi []byte, leaf func(k, v []byte, flags uint32)) {
	if depth > maxTreeDepth {
		c.structuralf("page %d: tree deeper than %d", id, maxTreeDepth)
		return
	}
	p := c.page(id, branchPageFlag|leafPageFlag)
	if p == nil {
		return
	}
	where := fmt.Sprintf("page %d", id)
	if binary.LittleEndian.Uint16(p[8:])&leafPageFlag != 0 {
		c.leaf(p, where, lo, hi, leaf)
		return
	}
	count := int(binary.LittleEndian.Uint16(p[10:]))
	keys := make([][]byte, 0, count)
	children := make([]uint64, 0, count)
	for i := range count {
		e := pageHeaderSize + i*elementSize
		if e+elementSize > len(p) {
			c.structuralf("%s: %d elements do not fit", where, count)
			return
		}
		pos, ksize := uint64(binary.LittleEndian.Uint32(p[e:])), uint64(binary.LittleEndian.Uint32(p[e+4:]))
		if uint64(e)+pos+ksize > uint64(len(p)) {
			c.structuralf("%s: element %d points outside the page", where, i)
			return
		}
		k := p[uint64(e)+pos : uint64(e)+pos+ksize]
		if i > 0 && bytes.Compare(keys[i-1], k) >= 0 {
			c.structuralf("%s: keys out of order at element %d", where, i)
			return
		}
		if !inBounds(k, lo, hi) {
			c.structuralf("%s: key of element %d is outside the range its parent gives", where, i)
			return
		}
		keys = append(keys, k)
		children = append(children, binary.LittleEndian.Uint64(p[e+8:]))
	}
	for i, child := range children {
		next := hi
		if i+1 < len(keys) {
			next = keys[i+1]
		}
		c.walkTree(child, depth+1, keys[i], next, leaf)
	}
}

// inBounds tells whether lo <= k < hi, a nil bound being no bound.
func inBounds(k, lo, hi []byte) bool {
	return (lo == nil || bytes.Compare(k, lo) >= 0) && (hi == nil || bytes.Compare(k, hi) < 0)
}

// leaf checks a leaf page and hands its entries on; nested buckets are
// walked in turn.
func (c *fileCheck) leaf(p []byte, where string, lo, hi []byte, leaf func(k, v []byte, flags uint32)) {
	if len(p) < pageHeaderSize {
		c.structuralf("%s: short", where)
		return
	}
	if !pageType(binary.LittleEndian.Uint16(p[8:]), leafPageFlag) {
		c.structuralf("%s: type %#x, want a leaf", where, binary.LittleEndian.Uint16(p[8:]))
		return
	}
	count := int(binary.LittleEndian.Uint16(p[10:]))
	var prev []byte
	for i := range count {
		e := pageHeaderSize + i*elementSize
		if e+elementSize > len(p) {
			c.structuralf("%s: %d elements do not fit", where, count)
			return
		}
		le := binary.LittleEndian
		flags := le.Uint32(p[e:])
		pos, ksize, vsize := uint64(le.Uint32(p[e+4:])), uint64(le.Uint32(p[e+8:])), uint64(le.Uint32(p[e+12:]))
		if uint64(e)+pos+ksize+vsize > uint64(len(p)) {
			c.structuralf("%s: element %d points outside the page", where, i)
			return
		}
		k := p[uint64(e)+pos : uint64(e)+pos+ksize]
		v := p[uint64(e)+pos+ksize : uint64(e)+pos+ksize+vsize]
		if i > 0 && bytes.Compare(prev, k) >= 0 {
			c.structuralf("%s: keys out of order at element %d", where, i)
			return
		}
		if !inBounds(k, lo, hi) {
			c.structuralf("%s: key of element %d is outside the range its parent gives", where, i)
			return
		}
		prev = k
		leaf(k, v, flags)
	}
}
