package web

import (
	"crypto/hmac"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Actions: the value of the action field of POST /act and GET /confirm.
const (
	actSignal     = "signal"
	actCancel     = "cancel"
	actRetry      = "retry"
	actRetrieved  = "retrieved"
	actCancelMany = "cancel-many"
	actRetryMany  = "retry-many"
)

// actionMethod is the RPC whose role an action needs.
var actionMethod = map[string]string{
	actSignal:     pb.InstanceService_SignalInstance_FullMethodName,
	actCancel:     pb.InstanceService_CancelInstance_FullMethodName,
	actRetry:      pb.InstanceService_RetryInstance_FullMethodName,
	actRetrieved:  pb.InstanceService_SignalInstance_FullMethodName,
	actCancelMany: pb.InstanceService_CancelInstances_FullMethodName,
	actRetryMany:  pb.InstanceService_RetryInstances_FullMethodName,
}

// confirmView is the data of the confirmation page.
type confirmView struct {
	Action string
	ID     string
	Signal string
	Q      instanceQuery
	// Count is how many instances a bulk action would change now.
	Count int
	Job   *fsm.Instance
	Back  string
	// Changed says the viewer confirmed another count, which no longer
	// matched: nothing was done.
	Changed bool
}

// urlValues encodes key, value pairs, leaving out empty values.
func urlValues(kv ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			q.Set(kv[i], kv[i+1])
		}
	}
	return q.Encode()
}

// confirmPage shows what an action will do and asks to confirm it; a bulk
// action shows how many instances it would change, and the confirmation
// carries that count so that the action refuses to run when the set
// changed meanwhile.
func (h *Handler) confirmPage(w http.ResponseWriter, r *http.Request, v *viewer) {
	q := r.URL.Query()
	action := q.Get("action")
	if err := h.mayAct(v, action); err != nil {
		h.fail(w, r, v, err)
		return
	}
	cv := &confirmView{Changed: q.Get("changed") != "", Action: action, ID: q.Get("id"), Signal: q.Get("signal"), Q: readQuery(r), Back: safeNext(q.Get("back"))}
	switch action {
	case actCancelMany, actRetryMany:
		n, err := h.bulk(r, action, cv.Q, true, 0, v)
		if err != nil {
			h.fail(w, r, v, err)
			return
		}
		cv.Count = n
	default:
		in, err := h.o.Engine.GetInstance(r.Context(), cv.ID)
		if err != nil {
			h.fail(w, r, v, err)
			return
		}
		cv.Job = &in
	}
	h.renderPage(w, r, &page{Name: "confirm", Title: "Confirm " + action, V: v, Data: cv}, http.StatusOK)
}

// mayAct returns nil when action is one and the viewer may take it: the
// role of the RPC it stands for decides.
func (h *Handler) mayAct(v *viewer, action string) error {
	method, ok := actionMethod[action]
	if !ok {
		return &fsm.InvalidError{Field: "action", Reason: fmt.Sprintf("%q is not an action", action)}
	}
	return h.mayCall(v, method)
}

// mayCall returns nil when the viewer may take an action calling method.
func (h *Handler) mayCall(v *viewer, method string) error {
	if h.o.ReadOnly {
		return status.Error(codes.PermissionDenied, "the dashboard is read-only (--http-read-only)")
	}
	if !v.may(method) {
		return status.Errorf(codes.PermissionDenied, "%s (roles %v) may not call %s", v.name, v.p.Roles, method)
	}
	return nil
}

// act runs a confirmed action. It needs the session's CSRF token, and the
// role of the RPC the action stands for.
func (h *Handler) act(w http.ResponseWriter, r *http.Request) {
	v, err := h.identify(w, r)
	if err != nil {
		http.Error(w, "not logged in", http.StatusUnauthorized)
		return
	}
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, v, &fsm.InvalidError{Field: "form", Reason: err.Error()})
		return
	}
	if !hmac.Equal([]byte(r.PostForm.Get(csrfField)), []byte(v.csrf)) {
		h.log.Warn("web action refused: missing or wrong CSRF token", logKeyRemote, r.RemoteAddr)
		http.Error(w, "missing or wrong CSRF token", http.StatusForbidden)
		return
	}
	f := r.PostForm
	action := f.Get("action")
	if err := h.mayAct(v, action); err != nil {
		h.fail(w, r, v, err)
		return
	}
	ctx := r.Context()
	id := f.Get("id")
	back := safeNext(f.Get("back"))
	switch {
	case back != "":
	case action == actCancelMany || action == actRetryMany:
		q := readQuery(r)
		back = h.url("/instances") + "?" + urlValues("machine", q.Machine, "node", q.Node, "status", q.Status)
	default:
		back = h.url("/instances/" + url.PathEscape(id))
	}
	switch action {
	case actSignal:
		_, err = h.o.Engine.SignalInstance(ctx, id, f.Get("signal"), nil, v.name)
	case actCancel:
		_, err = h.o.Engine.CancelInstance(ctx, id, f.Get("reason"), v.name)
	case actRetry:
		_, err = h.o.Engine.RetryInstance(ctx, id, f.Get("reason"), v.name)
	case actRetrieved:
		err = h.retrieved(r, id, f.Get(paramQuality), v)
	case actCancelMany, actRetryMany:
		var expected int
		if expected, err = strconv.Atoi(f.Get("expected")); err != nil {
			err = &fsm.InvalidError{Field: "expected", Reason: "is not a count"}
			break
		}
		var n int
		n, err = h.bulk(r, action, readQuery(r), false, expected, v)
		if err == nil {
			h.log.Info("web bulk action", logKeyAction, action, logKeyPrincipal, v.name, logKeyCount, n)
		}
	}
	if errors.Is(err, engine.ErrCountChanged) {
		// Ask again, with the count as it is now.
		q := readQuery(r)
		again := h.url("/confirm") + "?" + urlValues("action", action, "machine", q.Machine, "node", q.Node, "status", q.Status, "changed", "1")
		http.Redirect(w, r, again, http.StatusSeeOther)
		return
	}
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// retrieved answers the wall's "part retrieved" for a job awaiting
// retrieval: the signal retrieved, with the quality the operator saw. A bad
// part is printed again: a new order of one, of the same model, queued on
// the same printer.
func (h *Handler) retrieved(r *http.Request, id, quality string, v *viewer) error {
	if quality != qualityGood && quality != qualityBad {
		return &fsm.InvalidError{Field: paramQuality, Reason: "must be good or bad"}
	}
	if quality == qualityBad {
		if err := h.mayCall(v, pb.DeviceService_SubmitOrder_FullMethodName); err != nil {
			return err
		}
	}
	ctx := r.Context()
	job, err := h.o.Engine.SignalInstance(ctx, id, signalRetrieved, map[string]string{paramQuality: quality}, v.name)
	if err != nil || quality == qualityGood {
		return err
	}
	_, _, err = h.o.Engine.SubmitOrder(ctx, engine.OrderArgs{
		ID:       "reprint-" + id,
		Model:    job.Params[engine.JobParamModel],
		Quantity: 1,
		Printer:  job.Params[engine.JobParamDevice],
		Actor:    v.name,
	})
	return err
}
