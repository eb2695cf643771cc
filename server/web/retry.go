package web

import (
	"errors"
	"net/http"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
)

// The RPCs of retrying and of bulk actions, whose roles the dashboard's
// actions need.
const (
	methodRetryInstance   = pb.InstanceService_RetryInstance_FullMethodName
	methodCancelInstances = pb.InstanceService_CancelInstances_FullMethodName
	methodRetryInstances  = pb.InstanceService_RetryInstances_FullMethodName
)

// retry retries a failed instance from the node it failed in.
func (h *Handler) retry(r *http.Request, id string, v *viewer) error {
	_, err := h.o.Engine.RetryInstance(r.Context(), id, r.PostForm.Get("reason"), v.name)
	return err
}

// bulkArgs is the engine's filter for a bulk action on the instances page's
// query. A retry selects failed instances: the page's node, unless it is
// dfsmr.failed itself, is the node they failed in, and its status is not
// used. An empty filter means every instance, which the confirmation page
// counts before anything happens.
func bulkArgs(action string, q instanceQuery) (engine.BulkArgs, error) {
	st, ok := parseStatus(q.Status)
	if !ok {
		return engine.BulkArgs{}, &fsm.InvalidError{Field: "status", Reason: "unknown status"}
	}
	a := engine.BulkArgs{Machine: q.Machine, Node: q.Node, Status: st}
	if action == actRetryMany {
		a.Status = fsm.StatusUnspecified
		if a.Node == fsm.NodeFailed {
			a.Node = ""
		}
	}
	a.All = a.Machine == "" && a.Node == "" && a.Status == fsm.StatusUnspecified
	return a, nil
}

// bulk counts (dryRun) or runs a bulk action. A run carries the count the
// viewer confirmed: when another number matches now, it changes nothing
// and fails with engine.ErrCountChanged.
func (h *Handler) bulk(r *http.Request, action string, q instanceQuery, dryRun bool, expected int, v *viewer) (int, error) {
	a, err := bulkArgs(action, q)
	if err != nil {
		return 0, err
	}
	a.DryRun = dryRun
	a.Expected, a.HasExpected = expected, !dryRun
	a.Actor = v.name
	a.Reason = r.PostForm.Get("reason")
	var res engine.BulkResult
	if action == actCancelMany {
		res, err = h.o.Engine.CancelInstances(r.Context(), a)
	} else {
		res, err = h.o.Engine.RetryInstances(r.Context(), a)
	}
	if err != nil {
		return 0, err
	}
	if dryRun {
		return res.Matched, nil
	}
	return res.Changed, nil
}

// countChanged reports whether err refused a bulk action because the
// matching instances changed since the viewer confirmed their count.
func countChanged(err error) bool { return errors.Is(err, engine.ErrCountChanged) }
