package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// queueKey is device sep priority(4) timeKey(at)(8) job: a forward cursor
// over the device's prefix yields its queue in offer order.
func queueKey(device string, e store.QueueEntry) []byte {
	b := make([]byte, 0, len(device)+1+4+8+len(e.Job))
	b = appendStr(b, device)
	b = binary.BigEndian.AppendUint32(b, priorityKey(e.Priority))
	b = binary.BigEndian.AppendUint64(b, timeKey(e.At))
	return append(b, e.Job...)
}

func queuePrefix(device string) []byte { return appendStr(nil, device) }

func (r *readTx) Device(id string) (fsm.Device, error) {
	b, err := r.bucket(bucketDevices)
	if err != nil {
		return fsm.Device{}, err
	}
	v := b.Get([]byte(id))
	if v == nil {
		return fsm.Device{}, fmt.Errorf("device %q: %w", id, store.ErrNotFound)
	}
	return r.device([]byte(id), v)
}

func (r *readTx) device(k, v []byte) (fsm.Device, error) {
	rec, err := r.record(bucketDevices, k, v)
	if err != nil {
		return fsm.Device{}, err
	}
	d, err := store.DecodeDevice(rec)
	if err != nil {
		return fsm.Device{}, fmt.Errorf("device %q: %w", k, err)
	}
	return d, nil
}

func (r *readTx) Devices(pool, after string, limit int) ([]fsm.Device, error) {
	b, err := r.bucket(bucketDevices)
	if err != nil {
		return nil, err
	}
	var out []fsm.Device
	c := b.Cursor()
	k, v := c.Seek([]byte(after))
	if k != nil && string(k) == after {
		k, v = c.Next()
	}
	for ; k != nil && !full(len(out), limit); k, v = c.Next() {
		d, err := r.device(k, v)
		if err != nil {
			return nil, err
		}
		if pool == "" || d.Pool == pool {
			out = append(out, d)
		}
	}
	return out, nil
}

func (r *readTx) QueueHead(device string) (store.QueueEntry, bool, error) {
	b, err := r.bucket(bucketQueues)
	if err != nil {
		return store.QueueEntry{}, false, err
	}
	prefix := queuePrefix(device)
	k, _ := b.Cursor().Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return store.QueueEntry{}, false, nil
	}
	rest := k[len(prefix):]
	if len(rest) < 4+8 {
		return store.QueueEntry{}, false, fmt.Errorf("queue of device %q: %w: short key", device, store.ErrCorrupt)
	}
	return store.QueueEntry{
		Priority: int32(int64(0x7fffffff) - int64(binary.BigEndian.Uint32(rest))),
		At:       timeFromKey(binary.BigEndian.Uint64(rest[4:])),
		Job:      string(rest[12:]),
	}, true, nil
}

func (r *readTx) QueueLen(device string) (int, error) {
	b, err := r.bucket(bucketQueues)
	if err != nil {
		return 0, err
	}
	prefix := queuePrefix(device)
	n := 0
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		n++
	}
	return n, nil
}

func (w *writeTx) PutDevice(d fsm.Device) error {
	if err := checkName("device id", d.ID); err != nil {
		return err
	}
	b, err := w.bucket(bucketDevices)
	if err != nil {
		return err
	}
	w.wrote = true
	if err := b.Put([]byte(d.ID), seal([]byte(d.ID), store.AppendDevice(nil, &d))); err != nil {
		return fmt.Errorf("put device %q: %w", d.ID, err)
	}
	return nil
}

func (w *writeTx) Enqueue(device string, e store.QueueEntry) error {
	if err := checkName("device id", device); err != nil {
		return err
	}
	if err := checkName("job id", e.Job); err != nil {
		return err
	}
	b, err := w.bucket(bucketQueues)
	if err != nil {
		return err
	}
	w.wrote = true
	if err := b.Put(queueKey(device, e), nil); err != nil {
		return fmt.Errorf("enqueue %q on device %q: %w", e.Job, device, err)
	}
	return nil
}

func (w *writeTx) Dequeue(device string, e store.QueueEntry) error {
	b, err := w.bucket(bucketQueues)
	if err != nil {
		return err
	}
	key := queueKey(device, e)
	if b.Get(key) == nil {
		// bbolt gives nil for a key with an empty value too: look with a
		// cursor.
		if k, _ := b.Cursor().Seek(key); !bytes.Equal(k, key) {
			return fmt.Errorf("job %q in the queue of device %q: %w", e.Job, device, store.ErrNotFound)
		}
	}
	w.wrote = true
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("dequeue %q from device %q: %w", e.Job, device, err)
	}
	return nil
}
