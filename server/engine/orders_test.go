package engine_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// TestGetOrderKeepsToItsOrder: an order's jobs are found by their id
// prefix and their order param, so that order "o" does not list the jobs
// of order "o-1" ("o-1-1"), whose ids share the prefix.
func TestGetOrderKeepsToItsOrder(t *testing.T) {
	e := mustEngine(t)
	ctx := context.Background()
	mustConnect(t, e, "p1", "lab", "printing") // busy: the jobs stay queued
	for _, a := range []engine.OrderArgs{
		{ID: "o", Model: "m", Quantity: 2, Printer: "p1"},
		{ID: "o-1", Model: "m", Quantity: 1, Printer: "p1"},
	} {
		if _, _, err := e.SubmitOrder(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(o engine.Order) []string {
		var out []string
		for _, j := range o.Jobs {
			out = append(out, j.ID)
		}
		return out
	}
	for id, want := range map[string][]string{"o": {"o-1", "o-2"}, "o-1": {"o-1-1"}} {
		o, err := e.GetOrder(ctx, id)
		if err != nil || !slices.Equal(ids(o), want) || o.Reprints != 0 {
			t.Errorf("GetOrder(%s) = %v (%d reprints), %v; want %v", id, ids(o), o.Reprints, err, want)
		}
	}
	if _, err := e.GetOrder(ctx, "o-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetOrder of no order: %v, want not found", err)
	}
	var ie *fsm.InvalidError
	if _, err := e.GetOrder(ctx, ""); !errors.As(err, &ie) || ie.Field != "order_id" {
		t.Errorf("GetOrder without an id: %v", err)
	}
	if _, err := e.ReprintJob(ctx, "o-1", "op"); !errors.Is(err, fsm.ErrIllegalTransition) {
		t.Errorf("reprint of a queued job: %v, want an illegal transition", err)
	}
}
