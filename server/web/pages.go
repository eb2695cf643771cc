package web

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server/changes"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// Read bounds: a page reads at most this much, whatever the store holds.
const (
	// maxScan bounds the instances one page counts; counts past it are
	// shown as lower bounds.
	maxScan = 100_000
	// maxList bounds the instances a list shows.
	maxList = 100
	// maxTimeline bounds the changes an instance page shows: the newest.
	maxTimeline = 200
	// rateWindow is the time over which edge rates are measured, and
	// rateChanges the most recent changes read to measure them.
	rateWindow  = 5 * time.Minute
	rateChanges = 5000
)

// statuses lists the statuses in the order pages show them.
var statuses = []fsm.Status{fsm.StatusReady, fsm.StatusWaiting, fsm.StatusLeased, fsm.StatusHeld, fsm.StatusFinal}

func parseStatus(s string) (fsm.Status, bool) {
	if s == "" {
		return fsm.StatusUnspecified, true
	}
	for _, st := range statuses {
		if strings.EqualFold(st.String(), s) {
			return st, true
		}
	}
	return 0, false
}

// countKey is one cell of the counts: machine, node and status.
type countKey struct {
	Machine, Node string
	Status        fsm.Status
}

// countRow is one row of the counts table.
type countRow struct {
	countKey
	N int
}

// scan calls add with the instances matching f, up to maxScan, and
// reports whether it stopped there.
func (h *Handler) scan(ctx context.Context, f store.InstanceFilter, add func(fsm.Instance)) (capped bool, err error) {
	n := 0
	err = h.o.Engine.ListInstances(ctx, f, "", func(in fsm.Instance) bool {
		if n == maxScan {
			capped = true
			return false
		}
		n++
		add(in)
		return true
	})
	return capped, err
}

// --- machines ---

type machineRow struct {
	ID, Kind, Description string
	Version               uint32
	Counts                map[string]int
	Total                 int
}

func (h *Handler) machinesPage(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx := r.Context()
	var rows []*machineRow
	byID := map[string]*machineRow{}
	err := h.o.Engine.ListMachines(ctx, "", func(m engine.MachineInfo) bool {
		row := &machineRow{ID: m.ID, Kind: m.Kind.String(), Description: m.Description, Version: m.Version, Counts: map[string]int{}}
		rows = append(rows, row)
		byID[m.ID] = row
		return true
	})
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	capped, err := h.scan(ctx, store.InstanceFilter{}, func(in fsm.Instance) {
		if row := byID[in.Machine]; row != nil {
			row.Counts[in.Status.String()]++
			row.Total++
		}
	})
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	h.renderPage(w, r, &page{Name: "machines", Title: "Machines", V: v, Events: "?", Data: map[string]any{
		"Machines": rows, "Statuses": statusNames(), "Capped": capped,
	}}, http.StatusOK)
}

func statusNames() []string {
	out := make([]string, len(statuses))
	for i, s := range statuses {
		out[i] = s.String()
	}
	return out
}

func (h *Handler) machinePage(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx := r.Context()
	id := r.PathValue("id")
	m, _, err := h.o.Engine.GetMachine(ctx, id, 0)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	head, _ := r.Context().Value(headKey{}).(uint64)
	counts := map[string]map[fsm.Status]int{}
	capped, err := h.scan(ctx, store.InstanceFilter{Machine: id}, func(in fsm.Instance) {
		if counts[in.Node] == nil {
			counts[in.Node] = map[fsm.Status]int{}
		}
		counts[in.Node][in.Status]++
	})
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	rates, err := h.edgeRates(ctx, id, head)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	g := layout(m.Machine, counts, rates)
	h.renderPage(w, r, &page{Name: "machine", Title: "Machine " + id, V: v, Events: "?machine=" + urlq(id), Data: map[string]any{
		"M": m, "Graph": g, "Capped": capped, "Window": rateWindow,
	}}, http.StatusOK)
}

// edgeKey names an edge of a machine's graph.
type edgeKey struct{ From, Transition string }

// edgeRates counts, per edge, the moves of machine's instances over the
// last rateWindow, read from the newest rateChanges changes of the
// changelog, per minute.
func (h *Handler) edgeRates(ctx context.Context, machine string, head uint64) (map[edgeKey]float64, error) {
	from := uint64(1)
	if head > rateChanges {
		from = head - rateChanges + 1
	}
	since := h.o.Clock.Now().Add(-rateWindow)
	n := map[edgeKey]int{}
	if head == 0 {
		return nil, nil
	}
	count := func(c fsm.Change) error {
		if c.Transition != "" && c.FromNode != "" && c.At.After(since) {
			n[edgeKey{c.FromNode, c.Transition}]++
		}
		return nil
	}
	err := h.o.Hub.Stream(ctx, from, changes.Filter{Machine: machine}, count, changes.StopAtHead())
	if oor, ok := err.(*changes.OutOfRangeError); ok && oor.Compacted() && from < oor.Oldest {
		// Retention deleted the start: what is left is the recent part.
		clear(n)
		err = h.o.Hub.Stream(ctx, oor.Oldest, changes.Filter{Machine: machine}, count, changes.StopAtHead())
	}
	if _, ok := err.(*changes.OutOfRangeError); ok {
		return nil, nil // compacted: no rates rather than no page
	}
	if err != nil {
		return nil, err
	}
	out := map[edgeKey]float64{}
	for k, c := range n {
		out[k] = float64(c) / rateWindow.Minutes()
	}
	return out, nil
}

// --- instances ---

// instanceQuery is the filter of the instances page.
type instanceQuery struct {
	Machine, Node, Status, Q, Param string
}

func (q instanceQuery) storeFilter() (store.InstanceFilter, error) {
	st, ok := parseStatus(q.Status)
	if !ok {
		return store.InstanceFilter{}, &fsm.InvalidError{Field: "status", Reason: fmt.Sprintf("%q is not one of %v", q.Status, statusNames())}
	}
	if q.Node != "" && q.Machine == "" {
		return store.InstanceFilter{}, &fsm.InvalidError{Field: "node", Reason: "filtering by node needs a machine"}
	}
	return store.InstanceFilter{Machine: q.Machine, Node: q.Node, Status: st}, nil
}

// match applies the parts of the query the store does not index: the id
// substring and the param, "key=value" or a bare key.
func (q instanceQuery) match(in *fsm.Instance) bool {
	if q.Q != "" && !strings.Contains(in.ID, q.Q) {
		return false
	}
	if q.Param != "" {
		k, val, hasVal := strings.Cut(q.Param, "=")
		got, ok := in.Params[k]
		if !ok || (hasVal && got != val) {
			return false
		}
	}
	return true
}

func readQuery(r *http.Request) instanceQuery {
	f := r.Form
	if f == nil {
		f = r.URL.Query()
	}
	return instanceQuery{Machine: f.Get("machine"), Node: f.Get("node"), Status: strings.ToUpper(f.Get("status")), Q: f.Get("q"), Param: f.Get("param")}
}

func (h *Handler) instancesPage(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx := r.Context()
	q := readQuery(r)
	sf, err := q.storeFilter()
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	counts := map[countKey]int{}
	var list []fsm.Instance
	matched := 0
	capped, err := h.scan(ctx, store.InstanceFilter{Machine: q.Machine}, func(in fsm.Instance) {
		counts[countKey{in.Machine, in.Node, in.Status}]++
		if (sf.Node != "" && in.Node != sf.Node) || (sf.Status != 0 && in.Status != sf.Status) || !q.match(&in) {
			return
		}
		matched++
		if len(list) < maxList {
			list = append(list, in)
		}
	})
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	rows := make([]countRow, 0, len(counts))
	for k, n := range counts {
		rows = append(rows, countRow{k, n})
	}
	slices.SortFunc(rows, func(a, b countRow) int {
		return cmp.Or(cmp.Compare(a.Machine, b.Machine), cmp.Compare(a.Node, b.Node), cmp.Compare(a.Status, b.Status))
	})
	h.renderPage(w, r, &page{Name: "instances", Title: "Instances", V: v, Events: "?" + eventsQuery(q.Machine, "", ""), Data: map[string]any{
		"Q": q, "Counts": rows, "List": list, "Matched": matched, "Capped": capped, "Statuses": statusNames(),
		"CanBulk":       q.Q == "" && q.Param == "",
		"CanCancelMany": h.canAct(v, actionMethod[actCancelMany]),
		"CanRetryMany":  h.canAct(v, actionMethod[actRetryMany]),
	}}, http.StatusOK)
}

// instanceView is an instance page's data.
type instanceView struct {
	In       fsm.Instance
	Timeline []fsm.Change
	Earlier  bool
	// Signals are the signal transitions of the instance's node.
	Signals   []string
	CanSignal bool
	CanCancel bool
	CanRetry  bool
	Failed    bool
}

func (h *Handler) instancePage(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx := r.Context()
	id := r.PathValue("id")
	var tl []fsm.Change
	earlier := false
	in, _, err := h.o.Engine.InstanceHistory(ctx, id, 0, func(c fsm.Change) bool {
		if len(tl) == maxTimeline {
			tl = tl[1:]
			earlier = true
		}
		tl = append(tl, c)
		return true
	})
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	slices.Reverse(tl)
	iv := &instanceView{In: in, Timeline: tl, Earlier: earlier, Failed: in.Node == fsm.NodeFailed}
	if m, _, err := h.o.Engine.GetMachine(ctx, in.Machine, in.Version); err == nil {
		if n := m.Nodes[in.Node]; n != nil {
			for _, name := range n.Order {
				if n.Transitions[name].Signal {
					iv.Signals = append(iv.Signals, name)
				}
			}
		}
	}
	final := in.Status == fsm.StatusFinal
	iv.CanSignal = !final && len(iv.Signals) > 0 && h.canAct(v, pb.InstanceService_SignalInstance_FullMethodName)
	iv.CanCancel = !final && h.canAct(v, pb.InstanceService_CancelInstance_FullMethodName)
	iv.CanRetry = iv.Failed && h.canAct(v, actionMethod[actRetry])
	h.renderPage(w, r, &page{Name: "instance", Title: "Instance " + id, V: v, Events: "?instance=" + urlq(id), Data: iv}, http.StatusOK)
}

// --- changelog ---

func (h *Handler) changesPage(w http.ResponseWriter, r *http.Request, v *viewer) {
	q := r.URL.Query()
	h.renderPage(w, r, &page{Name: "changes", Title: "Changelog", V: v, Data: map[string]any{
		"Machine": q.Get("machine"), "Kind": q.Get("kind"), "Device": q.Get("device"), "Kinds": kindNames(),
		"Query": eventsQuery(q.Get("machine"), q.Get("kind"), q.Get("device")),
	}}, http.StatusOK)
}

// --- leases ---

type leaseRow struct {
	In fsm.Instance
	// Renewed is when the lease was taken or last extended.
	Renewed time.Time
	// Stuck: past half its timeout without a heartbeat.
	Stuck bool
}

func (h *Handler) leasesPage(w http.ResponseWriter, r *http.Request, v *viewer) {
	now := h.o.Clock.Now()
	var rows []leaseRow
	capped, err := h.scan(r.Context(), store.InstanceFilter{Status: fsm.StatusLeased}, func(in fsm.Instance) {
		rows = append(rows, leaseRow{In: in, Renewed: in.UpdatedAt, Stuck: stuck(in, now)})
	})
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	slices.SortFunc(rows, func(a, b leaseRow) int {
		if a.Stuck != b.Stuck {
			if a.Stuck {
				return -1
			}
			return 1
		}
		return a.In.Lease.ExpiresAt.Compare(b.In.Lease.ExpiresAt)
	})
	stuckN := 0
	for _, r := range rows {
		if r.Stuck {
			stuckN++
		}
	}
	h.renderPage(w, r, &page{Name: "leases", Title: "Leases", V: v, Events: "?", Data: map[string]any{"Rows": rows, "Stuck": stuckN, "Capped": capped}}, http.StatusOK)
}

// stuck reports whether a lease went past half its timeout without a
// heartbeat. Taking or extending a lease is the instance's last change
// (UpdatedAt) and sets its expiry a timeout later, so the timeout is
// ExpiresAt - UpdatedAt.
func stuck(in fsm.Instance, now time.Time) bool {
	l := in.Lease
	if in.Status != fsm.StatusLeased || l.ExpiresAt.IsZero() {
		return false
	}
	timeout := l.ExpiresAt.Sub(in.UpdatedAt)
	return timeout > 0 && now.Sub(in.UpdatedAt) > timeout/2
}

// --- printers ---

// Printer wall states, as tiles show them in words.
const (
	tilePrinting  = "printing"
	tileReady     = "ready"
	tileRetrieval = "needs retrieval"
	tileError     = "error"
	tileOffline   = "offline"
)

// Print job nodes and signals the wall acts on (machines/print_job.yaml).
const (
	jobMachine         = "print_job"
	jobQueued          = "queued"
	jobAwaiting        = "awaiting_retrieval"
	jobFailed          = "failed"
	signalRetrieved    = "retrieved"
	paramQuality       = "quality"
	qualityGood        = "good"
	qualityBad         = "bad"
	printerWaitingNode = "waiting_retrieval"
	printerErrorNode   = "error"
	printerPrinting    = "printing"
)

type tile struct {
	D        engine.DeviceInfo
	State    string
	Job      *fsm.Instance
	Queue    []string
	Retrieve bool
	Recover  bool
}

func (t *tile) Class() string { return strings.ReplaceAll(t.State, " ", "-") }

func tileState(d *engine.DeviceInfo, job *fsm.Instance) string {
	switch {
	case !d.Online:
		return tileOffline
	case d.Node == printerErrorNode:
		return tileError
	case d.Node == printerWaitingNode || (job != nil && job.Node == jobAwaiting):
		return tileRetrieval
	case d.Node == printerPrinting:
		return tilePrinting
	}
	return tileReady
}

func (h *Handler) printersPage(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx := r.Context()
	var tiles []*tile
	err := h.o.Engine.ListDevices(ctx, "", "", func(d engine.DeviceInfo) bool {
		tiles = append(tiles, &tile{D: d})
		return true
	})
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	queues := map[string][]string{}
	_, err = h.scan(ctx, store.InstanceFilter{Machine: jobMachine, Node: jobQueued}, func(in fsm.Instance) {
		p := in.Params[engine.JobParamDevice]
		queues[p] = append(queues[p], in.ID)
	})
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	canSignal := h.canAct(v, pb.InstanceService_SignalInstance_FullMethodName)
	for _, t := range tiles {
		if t.D.Job != "" {
			if in, err := h.o.Engine.GetInstance(ctx, t.D.Job); err == nil {
				t.Job = &in
			}
		}
		t.State = tileState(&t.D, t.Job)
		t.Queue = queues[t.D.ID]
		t.Retrieve = canSignal && t.Job != nil && t.Job.Node == jobAwaiting
		t.Recover = canSignal && t.Job != nil && t.Job.Node == jobFailed
	}
	h.renderPage(w, r, &page{Name: "printers", Title: "Printers", V: v, Events: "?", Data: map[string]any{"Tiles": tiles}}, http.StatusOK)
}

func kindNames() []string {
	var out []string
	for k := fsm.ChangeStarted; ; k++ {
		s := k.String()
		if s == "UNKNOWN" {
			break
		}
		out = append(out, s)
	}
	return out
}
