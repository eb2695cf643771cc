package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/device"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// Device and order names and limits.
const (
	// DefaultDeviceMachine is the device machine of a device that names
	// none when it registers.
	DefaultDeviceMachine = "printer"
	// JobParamDevice, JobParamModel and JobParamOrder are the params every
	// job gets from its order: the printer it is queued on, the model to
	// print and the order it belongs to.
	JobParamDevice = "printer"
	JobParamModel  = "model"
	JobParamOrder  = "order"
	// MaxOrderQuantity bounds the jobs of one order.
	MaxOrderQuantity = 1000
	// MaxModelBytes bounds an order's model.
	MaxModelBytes = 1 << 10
	// MaxCapabilities bounds a device's capabilities.
	MaxCapabilities = 64
)

// ErrReplaced is returned to a device's stream when a newer stream of the
// same device took over, or when the device is no longer online.
var ErrReplaced = device.ErrReplaced

// DeviceActor is the changelog actor of a device's rounds.
func DeviceActor(id string) string { return "device:" + id }

// deviceWatchers are the device sessions waiting for news of their device:
// a commit that concerns a device (a job queued on it, an operator signal
// on its job) pokes each, so the session runs a round without waiting for
// the device to speak.
type deviceWatchers struct {
	mu sync.Mutex
	m  map[string]map[chan struct{}]struct{}
}

func (w *deviceWatchers) wake(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.m[id] {
		select {
		case ch <- struct{}{}:
		default: // a poke is pending already: one round reads everything
		}
	}
}

// WatchDevice returns a channel that receives a value after each commit
// that concerns device id and was not made by the device's own round, and
// a function that stops the watch.
func (e *Engine) WatchDevice(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w := &e.devices
	w.mu.Lock()
	if w.m == nil {
		w.m = map[string]map[chan struct{}]struct{}{}
	}
	if w.m[id] == nil {
		w.m[id] = map[chan struct{}]struct{}{}
	}
	w.m[id][ch] = struct{}{}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.m[id], ch)
		if len(w.m[id]) == 0 {
			delete(w.m, id)
		}
		w.mu.Unlock()
	}
}

// resolver looks machines up at their latest version, for the checks of
// machines.CompileWith (a device machine's reconcile table names its job
// machine, which must be defined first).
func (e *Engine) resolver(ctx context.Context) machines.Resolver {
	return func(id string) (m *fsm.Machine, ok bool) {
		err := e.st.View(ctx, func(tx store.ReadTx) error {
			var err error
			m, err = e.machineVersion(tx, id, 0)
			return err
		})
		return m, err == nil
	}
}

// stampDevice names the device of a job's changes, so that the changelog
// says which printer each job event concerns and OnCommit can poke it.
func stampDevice(m *fsm.Machine, in fsm.Instance, changes []fsm.Change) {
	if m.Kind != fsm.KindJob {
		return
	}
	for i := range changes {
		if changes[i].Device == "" {
			changes[i].Device = in.Params[JobParamDevice]
		}
	}
}

// Registration is who a device says it is when its stream opens.
type Registration = device.Registration

func checkRegistration(r *Registration) error {
	if err := checkText("register.device_id", r.ID, true, MaxIDBytes); err != nil {
		return err
	}
	if err := checkText("register.pool", r.Pool, false, MaxIDBytes); err != nil {
		return err
	}
	if err := checkText("register.machine", r.Machine, false, MaxIDBytes); err != nil {
		return err
	}
	if len(r.Capabilities) > MaxCapabilities {
		return invalid("register.capabilities", "has %d entries; the limit is %d", len(r.Capabilities), MaxCapabilities)
	}
	return checkParams("register.capabilities", r.Capabilities)
}

func checkReport(rep *fsm.DeviceReport) error {
	if err := checkText("report.node", rep.Node, true, MaxIDBytes); err != nil {
		return err
	}
	if err := checkText("report.job_id", rep.Job, false, MaxIDBytes); err != nil {
		return err
	}
	if rep.Rejection != nil && len(rep.Rejection.Reason) > MaxReasonBytes {
		return invalid("report.rejection.reason", "is %d bytes long; the limit is %d", len(rep.Rejection.Reason), MaxReasonBytes)
	}
	return nil
}

// Connect registers a device on a new stream and runs the round of its
// first report, in one transaction: the device is online, with a new
// connection number that its later calls present. A newer Connect of the
// same device makes the older stream's calls fail with ErrReplaced.
func (e *Engine) Connect(ctx context.Context, reg Registration, rep fsm.DeviceReport) (conn uint64, cmd *fsm.DeviceCommand, err error) {
	if err := checkRegistration(&reg); err != nil {
		return 0, nil, err
	}
	if err := checkReport(&rep); err != nil {
		return 0, nil, err
	}
	if reg.Machine == "" {
		reg.Machine = DefaultDeviceMachine
	}
	var written fsm.Device // by the last run of the update
	err = e.st.Update(ctx, func(tx store.Tx) error {
		now := e.clock.Now()
		d, err := tx.Device(reg.ID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			d = fsm.Device{ID: reg.ID}
		case err != nil:
			return err
		}
		m, err := e.deviceMachine(tx, reg.Machine)
		if err != nil {
			return err
		}
		if d.Machine != reg.Machine {
			// Another machine's nodes mean nothing in this one.
			d.Node, d.Pending = "", fsm.Command{}
		}
		d.Pool, d.Capabilities, d.Machine = reg.Pool, maps.Clone(reg.Capabilities), reg.Machine
		d.Online, d.LastSeen = true, now
		d.Conn++
		conn = d.Conn
		online := fsm.Change{At: now, Kind: fsm.ChangeDeviceOnline, Device: d.ID, Machine: m.ID, Version: m.Version,
			FromNode: d.Node, ToNode: rep.Node}
		dec, err := e.round(tx, m, d, &rep, true, now, online)
		cmd, written = dec.Command, dec.Device
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	e.live.written.Add(1)
	e.live.set(written, false)
	return conn, cmd, nil
}

// Report runs the round of a device's report on its stream conn.
func (e *Engine) Report(ctx context.Context, id string, conn uint64, rep fsm.DeviceReport) (cmd *fsm.DeviceCommand, err error) {
	if err := checkReport(&rep); err != nil {
		return nil, err
	}
	return e.deviceRound(ctx, id, conn, &rep)
}

// Poke runs a round of the server's own for a device on its stream conn,
// from the node it last reported: something that concerns it changed.
func (e *Engine) Poke(ctx context.Context, id string, conn uint64) (cmd *fsm.DeviceCommand, err error) {
	return e.deviceRound(ctx, id, conn, nil)
}

// deviceRound runs the round of rep (nil: a poke) for device id on its
// stream conn. Unless the report surely decides something (a new node, a
// rejection), it first decides on a read transaction: a quiet round (see
// quietRound) ends there, its live fields kept in memory. Any other round
// is decided again and written in a write transaction, which the store
// commits together with the other updates queued meanwhile. (Keeping the
// read's decision and only checking in the write transaction that the
// device, its job, its queue head and the head's job are unchanged was
// measured slower with 1,000 printers: those checks read as much as the
// decision does, and the farm is bound by the CPU of every round, not by
// the writer's share of it.)
func (e *Engine) deviceRound(ctx context.Context, id string, conn uint64, rep *fsm.DeviceReport) (*fsm.DeviceCommand, error) {
	var live fsm.Device
	err := errNotQuiet
	if !e.live.mustWrite(id, conn, rep) {
		err = e.st.View(ctx, func(tx store.ReadTx) error {
			d, m, err := e.connected(tx, id, conn)
			if err != nil {
				return err
			}
			e.live.overlay(&d)
			in, _, err := e.roundInput(tx, m, d, rep, false, e.clock.Now(), func(store.QueueEntry) error { return errNotQuiet })
			if err != nil {
				return err
			}
			dec, err := fsm.Reconcile(in)
			if err != nil {
				return err
			}
			if !quietRound(d, dec) {
				return errNotQuiet
			}
			live = dec.Device
			return nil
		})
	}
	switch {
	case err == nil:
		e.live.quiet.Add(1)
		e.live.set(live, true)
		return nil, nil
	case !errors.Is(err, errNotQuiet):
		return nil, err
	}
	var cmd *fsm.DeviceCommand
	err = e.st.Update(ctx, func(tx store.Tx) error {
		d, m, err := e.connected(tx, id, conn)
		if err != nil {
			return err
		}
		e.live.overlay(&d)
		dec, err := e.round(tx, m, d, rep, false, e.clock.Now())
		cmd, live = dec.Command, dec.Device
		return err
	})
	if err != nil {
		return nil, err
	}
	e.live.written.Add(1)
	e.live.set(live, false)
	return cmd, nil
}

// Disconnect marks a device offline when its stream conn ends, unless a
// newer stream took over. Its job is left as it is.
func (e *Engine) Disconnect(ctx context.Context, id string, conn uint64, reason string) error {
	if len(reason) > MaxReasonBytes {
		reason = reason[:MaxReasonBytes]
	}
	err := e.st.Update(ctx, func(tx store.Tx) error {
		d, err := tx.Device(id)
		if err != nil {
			return err
		}
		if d.Conn != conn || !d.Online {
			return nil
		}
		e.live.overlay(&d)
		return e.offline(tx, d, reason)
	})
	if err == nil {
		e.live.drop(id, conn)
	}
	return err
}

func (e *Engine) offline(tx store.Tx, d fsm.Device, reason string) error {
	now := e.clock.Now()
	d.Online, d.LastSeen = false, now
	if err := tx.PutDevice(d); err != nil {
		return err
	}
	c := fsm.Change{At: now, Actor: DeviceActor(d.ID), Kind: fsm.ChangeDeviceOffline,
		Device: d.ID, Machine: d.Machine, FromNode: d.Node, ToNode: d.Node, Reason: reason}
	if m, err := e.machineVersion(tx, d.Machine, 0); err == nil {
		c.Version = m.Version
	}
	_, err := tx.AppendChange(c)
	return err
}

// offlineDevices marks offline every device a previous run of the server
// left online: their streams died with it. Lead calls it.
func (e *Engine) offlineDevices(ctx context.Context) error {
	return e.st.Update(ctx, func(tx store.Tx) error {
		all, err := tx.Devices("", "", 0)
		if err != nil {
			return err
		}
		for _, d := range all {
			if d.Online {
				if err := e.offline(tx, d, "server restarted"); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// connected loads a device whose stream conn is the live one.
func (e *Engine) connected(tx store.ReadTx, id string, conn uint64) (fsm.Device, *fsm.Machine, error) {
	d, err := tx.Device(id)
	if err != nil {
		return fsm.Device{}, nil, err
	}
	if d.Conn != conn || !d.Online {
		return fsm.Device{}, nil, fmt.Errorf("device %q stream %d (live: %d, online %v): %w", id, conn, d.Conn, d.Online, ErrReplaced)
	}
	m, err := e.deviceMachine(tx, d.Machine)
	return d, m, err
}

// deviceMachine returns the latest version of a device machine.
func (e *Engine) deviceMachine(tx store.ReadTx, id string) (*fsm.Machine, error) {
	m, err := e.machineVersion(tx, id, 0)
	if err != nil {
		return nil, err
	}
	if m.Kind != fsm.KindDevice || m.Reconcile == nil {
		return nil, invalid("register.machine", "machine %q is not a device machine with a reconcile table", id)
	}
	return m, nil
}

// round runs fsm.Reconcile on what the store holds for d and writes the
// decision: the device, the jobs it moved, its queue, and the changes
// (first those in before), all under the device's actor.
func (e *Engine) round(tx store.Tx, m *fsm.Machine, d fsm.Device, rep *fsm.DeviceReport, first bool, now time.Time, before ...fsm.Change) (fsm.ReconcileDecision, error) {
	in, head, err := e.roundInput(tx, m, d, rep, first, now, func(h store.QueueEntry) error { return tx.Dequeue(d.ID, h) })
	if err != nil {
		return fsm.ReconcileDecision{}, err
	}
	dec, err := fsm.Reconcile(in)
	if err != nil {
		return fsm.ReconcileDecision{}, err
	}
	if dec.Dispatched {
		if err := tx.Dequeue(d.ID, head); err != nil {
			return fsm.ReconcileDecision{}, err
		}
	}
	for _, j := range dec.Jobs {
		if err := tx.PutInstance(j); err != nil {
			return fsm.ReconcileDecision{}, err
		}
	}
	if err := tx.PutDevice(dec.Device); err != nil {
		return fsm.ReconcileDecision{}, err
	}
	for _, c := range append(before, dec.Changes...) {
		c.Actor = DeviceActor(d.ID)
		if _, err := tx.AppendChange(c); err != nil {
			return fsm.ReconcileDecision{}, err
		}
	}
	return dec, nil
}

// roundInput reads what a round of device d looks at. Queue entries of
// jobs that ended while queued are passed to drop.
func (e *Engine) roundInput(tx store.ReadTx, m *fsm.Machine, d fsm.Device, rep *fsm.DeviceReport, first bool, now time.Time, drop func(store.QueueEntry) error) (fsm.ReconcileInput, store.QueueEntry, error) {
	in := fsm.ReconcileInput{Machine: m, Device: d, Report: rep, First: first, Now: now}
	if d.Job != "" {
		job, err := tx.Instance(d.Job)
		if err != nil {
			return in, store.QueueEntry{}, fmt.Errorf("job %q of device %q: %w", d.Job, d.ID, err)
		}
		if in.JobMachine, err = e.machineVersion(tx, job.Machine, job.Version); err != nil {
			return in, store.QueueEntry{}, err
		}
		in.Job = &job
	}
	head, h, err := e.queueHead(tx, d.ID, drop)
	if err != nil {
		return in, store.QueueEntry{}, err
	}
	if head.Job != "" {
		if in.HeadMachine, err = e.machineVersion(tx, h.Machine, h.Version); err != nil {
			return in, store.QueueEntry{}, err
		}
		in.Head = &h
	}
	return in, head, nil
}

// queueHead returns the first live entry of a device's queue and its job,
// passing the entries of jobs that ended while queued (cancelled) to drop,
// which removes them; a zero entry when the queue is empty.
func (e *Engine) queueHead(tx store.ReadTx, id string, drop func(store.QueueEntry) error) (store.QueueEntry, fsm.Instance, error) {
	for {
		head, ok, err := tx.QueueHead(id)
		if err != nil || !ok {
			return store.QueueEntry{}, fsm.Instance{}, err
		}
		in, err := tx.Instance(head.Job)
		switch {
		case err == nil && in.Status != fsm.StatusFinal:
			return head, in, nil
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return store.QueueEntry{}, fsm.Instance{}, err
		}
		if err := drop(head); err != nil {
			return store.QueueEntry{}, fsm.Instance{}, err
		}
	}
}

// OrderArgs are the inputs of SubmitOrder.
type OrderArgs struct {
	// ID is the idempotency key; empty lets the server choose one.
	ID string
	// Model is what to print.
	Model string
	// Quantity is the number of jobs.
	Quantity int
	// Printer or Pool (exactly one) says where the jobs are queued.
	Printer string
	Pool    string
	// Priority orders the jobs in their printer's queue.
	Priority int32
	// Actor is recorded in the changelog.
	Actor string
}

func checkOrder(a *OrderArgs) error {
	if err := checkText("order_id", a.ID, false, MaxIDBytes-8); err != nil {
		return err
	}
	if err := checkText("model", a.Model, true, MaxModelBytes); err != nil {
		return err
	}
	if a.Quantity < 1 || a.Quantity > MaxOrderQuantity {
		return invalid("quantity", "%d is not between 1 and %d", a.Quantity, MaxOrderQuantity)
	}
	if (a.Printer == "") == (a.Pool == "") {
		return invalid("printer", "set exactly one of printer and pool")
	}
	if err := checkText("printer", a.Printer, false, MaxIDBytes); err != nil {
		return err
	}
	return checkText("pool", a.Pool, false, MaxIDBytes)
}

// jobID is the id of job n (from 1) of an order: zero-padded to the width
// of the quantity, so that job ids sort in job order.
func jobID(order string, n, quantity int) string {
	return fmt.Sprintf("%s-%0*d", order, len(strconv.Itoa(quantity)), n)
}

// SubmitOrder creates an order's jobs, queued on one printer or spread over
// a pool's printers (each to the one with the fewest jobs, queued or in
// progress; then the lowest id), in one transaction. The same order id
// with the same content returns the existing jobs; with other content it
// is ErrAlreadyExists.
func (e *Engine) SubmitOrder(ctx context.Context, a OrderArgs) (id string, jobs []fsm.Instance, err error) {
	if err := checkOrder(&a); err != nil {
		return "", nil, err
	}
	err = e.st.Update(ctx, func(tx store.Tx) error {
		id, jobs = a.ID, nil
		if id == "" {
			id = e.newID("order")
		}
		if existing, found, err := e.existingOrder(tx, id, a); found || err != nil {
			jobs = existing
			return err
		}
		var printers []fsm.Device
		if a.Printer != "" {
			d, err := tx.Device(a.Printer)
			if err != nil {
				return fmt.Errorf("printer %q: %w", a.Printer, err)
			}
			printers = []fsm.Device{d}
		} else {
			all, err := tx.Devices(a.Pool, "", 0)
			if err != nil {
				return err
			}
			if len(all) == 0 {
				return fmt.Errorf("pool %q has no printer: %w", a.Pool, store.ErrNotFound)
			}
			printers = all
		}
		load := make([]int, len(printers))
		jobMachines := make([]*fsm.Machine, len(printers))
		for i, d := range printers {
			n, err := tx.QueueLen(d.ID)
			if err != nil {
				return err
			}
			if d.Job != "" {
				n++
			}
			load[i] = n
			dm, err := e.deviceMachine(tx, d.Machine)
			if err != nil {
				return err
			}
			if jobMachines[i], err = e.machineVersion(tx, dm.Reconcile.Jobs, 0); err != nil {
				return err
			}
		}
		now := e.clock.Now()
		for n := 1; n <= a.Quantity; n++ {
			i := 0 // printers are in id order: the first of the least loaded
			for j := range load {
				if load[j] < load[i] {
					i = j
				}
			}
			load[i]++
			p := printers[i].ID
			params := map[string]string{JobParamDevice: p, JobParamModel: a.Model, JobParamOrder: id}
			in, changes, err := fsm.Start(jobMachines[i], fsm.StartArgs{ID: jobID(id, n, a.Quantity), Params: params, Priority: a.Priority}, now)
			if err != nil {
				return err
			}
			stampDevice(jobMachines[i], in, changes)
			if err := e.write(tx, in, changes, a.Actor); err != nil {
				return err
			}
			if err := tx.Enqueue(p, store.QueueEntry{Job: in.ID, Priority: in.Priority, At: now}); err != nil {
				return err
			}
			jobs = append(jobs, in)
		}
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	return id, jobs, nil
}

// existingOrder returns the jobs of order id when it exists: found is true,
// and err is ErrAlreadyExists when its content differs from a.
func (e *Engine) existingOrder(tx store.ReadTx, id string, a OrderArgs) (jobs []fsm.Instance, found bool, err error) {
	first, err := tx.Instance(jobID(id, 1, a.Quantity))
	if errors.Is(err, store.ErrNotFound) {
		// A different quantity pads differently: look for the jobs of any
		// order with this id.
		others, err := tx.Instances(store.InstanceFilter{}, id+"-", 1)
		if err != nil {
			return nil, false, err
		}
		if len(others) == 1 && others[0].Params[JobParamOrder] == id {
			return nil, true, fmt.Errorf("order %q exists with another quantity: %w", id, ErrAlreadyExists)
		}
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if first.Params[JobParamOrder] != id {
		return nil, true, fmt.Errorf("instance %q exists and is no job of order %q: %w", first.ID, id, ErrAlreadyExists)
	}
	for n := 1; n <= a.Quantity; n++ {
		in, err := tx.Instance(jobID(id, n, a.Quantity))
		if errors.Is(err, store.ErrNotFound) {
			return nil, true, fmt.Errorf("order %q exists with another quantity: %w", id, ErrAlreadyExists)
		}
		if err != nil {
			return nil, true, err
		}
		p := in.Params
		switch {
		case p[JobParamOrder] != id || p[JobParamModel] != a.Model || in.Priority != a.Priority:
			return nil, true, fmt.Errorf("order %q exists with another model or priority: %w", id, ErrAlreadyExists)
		case a.Printer != "" && p[JobParamDevice] != a.Printer:
			return nil, true, fmt.Errorf("order %q exists on another printer: %w", id, ErrAlreadyExists)
		}
		jobs = append(jobs, in)
	}
	if _, err := tx.Instance(jobID(id, a.Quantity+1, a.Quantity)); err == nil {
		return nil, true, fmt.Errorf("order %q exists with another quantity: %w", id, ErrAlreadyExists)
	}
	return jobs, true, nil
}

// DeviceInfo is a device with the length of its queue.
type DeviceInfo struct {
	fsm.Device
	QueueLen int
}

// ListDevices calls add with each device of pool (empty: all) whose id
// sorts after after, in id order, until add returns false or none is left.
// Devices are read readChunk at a time.
func (e *Engine) ListDevices(ctx context.Context, pool, after string, add func(DeviceInfo) bool) error {
	if err := checkText("pool", pool, false, MaxIDBytes); err != nil {
		return err
	}
	return e.st.View(ctx, func(tx store.ReadTx) error {
		for {
			ds, err := tx.Devices(pool, after, readChunk)
			if err != nil {
				return err
			}
			for _, d := range ds {
				if d.Online {
					e.live.overlay(&d)
				}
				n, err := tx.QueueLen(d.ID)
				if err != nil {
					return err
				}
				if !add(DeviceInfo{Device: d, QueueLen: n}) {
					return nil
				}
			}
			if len(ds) < readChunk {
				return nil
			}
			after = ds[len(ds)-1].ID
		}
	})
}
