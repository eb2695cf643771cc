package bolt

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"go.etcd.io/bbolt"

	"github.com/dfsmr/dfsmr/server/store"
)

// Every record value is sealed: the encoded record followed by a 4-byte
// big-endian CRC-32C of key || record. A read that finds a mismatch fails
// with a *store.CorruptError naming the bucket and key, instead of decoding
// bytes a flipped bit changed. The key is part of the sum so that a damaged
// key (an instance filed under another id) is caught too. Index buckets hold
// empty values; their keys are checked against the records by Check.
const trailerLen = 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sealedBuckets are the buckets whose values are records.
var sealedBuckets = map[string]bool{
	string(bucketInstances): true,
	string(bucketChanges):   true,
	string(bucketMachines):  true,
	string(bucketDurations): true,
	string(bucketBreakers):  true,
	string(bucketDevices):   true,
}

// keyChecksums in the meta bucket marks a file whose records are all
// sealed; its value names the checksum. Files written before records were
// sealed lack it, and Open seals their records once (see sealAll).
var (
	keyChecksums   = []byte("checksums")
	checksumCRC32C = []byte("crc32c")
)

func recordSum(key, rec []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, key), castagnoli, rec)
}

// seal appends the trailer of key to rec, the fresh encoding of a record.
func seal(key, rec []byte) []byte {
	return binary.BigEndian.AppendUint32(rec, recordSum(key, rec))
}

// unseal returns the record of a sealed value, or why the value is bad.
func unseal(key, v []byte) ([]byte, string) {
	if len(v) < trailerLen {
		return nil, fmt.Sprintf("value of %d bytes is shorter than its checksum", len(v))
	}
	rec := v[:len(v)-trailerLen]
	if want, got := binary.BigEndian.Uint32(v[len(rec):]), recordSum(key, rec); want != got {
		return nil, fmt.Sprintf("checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	return rec, ""
}

// record returns the record under key in bucket from a value read in tx.
func (r *readTx) record(bucket, key, v []byte) ([]byte, error) {
	rec, reason := unseal(key, v)
	if reason != "" {
		return nil, &store.CorruptError{Path: r.tx.DB().Path(), Bucket: string(bucket), Key: append([]byte(nil), key...), Reason: reason}
	}
	return rec, nil
}

// sealAll seals every record of a file written before records were sealed
// and marks the file, in the caller's transaction: one pass at the first
// start of a newer build. Values are copied before they are replaced,
// since bbolt's pages are reused within the transaction.
func sealAll(tx *bbolt.Tx) error {
	for name := range sealedBuckets {
		b := tx.Bucket([]byte(name))
		if b == nil {
			continue
		}
		var kvs [][2][]byte
		if err := b.ForEach(func(k, v []byte) error {
			kvs = append(kvs, [2][]byte{append([]byte(nil), k...), seal(k, append([]byte(nil), v...))})
			return nil
		}); err != nil {
			return err
		}
		for _, kv := range kvs {
			if err := b.Put(kv[0], kv[1]); err != nil {
				return fmt.Errorf("seal %s/%q: %w", name, kv[0], err)
			}
		}
	}
	return tx.Bucket(bucketMeta).Put(keyChecksums, checksumCRC32C)
}
