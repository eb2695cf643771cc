package web

import (
	"net/http"

	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
)

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
