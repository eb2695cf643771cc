package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// Reprints.
const (
	// JobParamReprintOf names, on a reprint, the job it reprints.
	JobParamReprintOf = "reprint_of"
	// JobNodeScrapped is the final node of a print job whose part was
	// lost: the only one ReprintJob reprints.
	JobNodeScrapped = "scrapped"
	// MaxOrderJobs bounds the jobs GetOrder returns: an order's jobs and
	// their reprints.
	MaxOrderJobs = 2 * MaxOrderQuantity
)

// Order is an order's jobs, reprints included, in id order (a reprint
// sorts right after the job it reprints).
type Order struct {
	ID   string
	Jobs []fsm.Instance
	// Reprints is the number of Jobs that are reprints.
	Reprints int
}

// GetOrder returns order id; store.ErrNotFound when it has no job.
func (e *Engine) GetOrder(ctx context.Context, id string) (Order, error) {
	if err := checkText("order_id", id, true, MaxIDBytes-8); err != nil {
		return Order{}, err
	}
	o := Order{ID: id}
	err := e.st.View(ctx, func(tx store.ReadTx) error {
		var err error
		o.Jobs, err = orderJobs(tx, id)
		return err
	})
	if err != nil {
		return Order{}, err
	}
	if len(o.Jobs) == 0 {
		return Order{}, fmt.Errorf("order %q: %w", id, store.ErrNotFound)
	}
	for _, j := range o.Jobs {
		if j.Params[JobParamReprintOf] != "" {
			o.Reprints++
		}
	}
	return o, nil
}

// orderJobs returns the jobs of order id: every instance whose id starts
// with "<id>-" and whose order param is id, at most MaxOrderJobs.
func orderJobs(tx store.ReadTx, id string) ([]fsm.Instance, error) {
	var jobs []fsm.Instance
	prefix, after := id+"-", id+"-"
	for {
		chunk, err := tx.Instances(store.InstanceFilter{}, after, readChunk)
		if err != nil {
			return nil, err
		}
		for _, in := range chunk {
			if !strings.HasPrefix(in.ID, prefix) {
				return jobs, nil
			}
			if in.Params[JobParamOrder] == id {
				if len(jobs) == MaxOrderJobs {
					return jobs, nil
				}
				jobs = append(jobs, in)
			}
		}
		if len(chunk) < readChunk {
			return jobs, nil
		}
		after = chunk[len(chunk)-1].ID
	}
}

// ReprintJob queues a new job for the part of job id, whose print failed
// (final in JobNodeScrapped), on the same printer and in the same order.
// The reprint is a new instance, "<id>r<n>" with n one more than the
// reprints of the original job so far ("o-03r1", then "o-03r2" for a
// reprint of o-03r1): a final job never changes, so the failed job keeps
// its history and the order counts both. A second call for the same job
// returns the reprint the first made.
func (e *Engine) ReprintJob(ctx context.Context, id, actor string) (fsm.Instance, error) {
	if err := checkText("job_id", id, true, MaxIDBytes); err != nil {
		return fsm.Instance{}, err
	}
	var out fsm.Instance
	err := e.st.Update(ctx, func(tx store.Tx) error {
		failed, err := tx.Instance(id)
		if err != nil {
			return err
		}
		order, printer := failed.Params[JobParamOrder], failed.Params[JobParamDevice]
		if order == "" || printer == "" {
			return invalid("job_id", "instance %q is no job of an order", id)
		}
		if failed.Status != fsm.StatusFinal || failed.Node != JobNodeScrapped {
			return fmt.Errorf("job %q is in %s (%s): only a job whose print failed (%s) is reprinted: %w",
				id, failed.Node, failed.Status, JobNodeScrapped, fsm.ErrIllegalTransition)
		}
		base, _, _ := strings.Cut(strings.TrimPrefix(id, order+"-"), "r")
		base = order + "-" + base
		n := 1
		for ; ; n++ {
			in, err := tx.Instance(base + "r" + strconv.Itoa(n))
			if errors.Is(err, store.ErrNotFound) {
				break
			}
			if err != nil {
				return err
			}
			if in.Params[JobParamReprintOf] == id {
				out = in // made by an earlier call
				return nil
			}
		}
		m, err := e.machineVersion(tx, failed.Machine, 0)
		if err != nil {
			return err
		}
		rid := base + "r" + strconv.Itoa(n)
		if len(rid) > MaxIDBytes {
			return invalid("job_id", "the reprint's id %q would be longer than %d bytes", rid, MaxIDBytes)
		}
		params := maps.Clone(failed.Params)
		params[JobParamReprintOf] = id
		now := e.clock.Now()
		in, changes, err := fsm.Start(m, fsm.StartArgs{ID: rid, Params: params, Priority: failed.Priority}, now)
		if err != nil {
			return err
		}
		stampDevice(m, in, changes)
		if err := e.write(tx, in, changes, actor); err != nil {
			return err
		}
		out = in
		return tx.Enqueue(printer, store.QueueEntry{Job: in.ID, Priority: in.Priority, At: now})
	})
	return out, err
}
