package sim

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/anishathalye/porcupine"
)

// linTimeout bounds the linearizability check of one run. A check that
// runs out of time is a failure too: a history the checker cannot decide
// proves nothing.
const linTimeout = time.Minute

// history returns the operations of the run as porcupine takes them. A
// copy of a call that reached the server but whose reply no client took is
// ambiguous: open-ended, with an output the model may take as applied or
// not, under a client id of its own. A copy the network lost never reached
// the server and is left out, as is a Ready that found no work.
func (s *sim) history() []porcupine.Operation {
	var h []porcupine.Operation
	for _, r := range s.ops {
		if !r.delivered || r.in.ID == "" || r.in.Kind == opDefine {
			continue
		}
		op := porcupine.Operation{ClientId: r.client, Input: r.in, Call: r.call, Output: r.out, Return: r.ret}
		if r.ret == 0 {
			op.ClientId, op.Output, op.Return = s.newClient(), (*output)(nil), openEnded
		}
		h = append(h, op)
	}
	return h
}

// linearizable checks the history against the model and, when it is not
// linearizable, writes porcupine's visualization next to the seed.
func (s *sim) linearizable() {
	h := s.history()
	s.res.Ops = len(h)
	m := model.ToModel()
	res, info := porcupine.CheckOperationsVerbose(m, h, linTimeout)
	s.tracef("linearizability of %d operations: %s", len(h), res)
	if res == porcupine.Ok {
		return
	}
	dir := s.cfg.ArtifactDir
	if dir == "" {
		dir = s.cfg.Dir
	}
	path := filepath.Join(dir, fmt.Sprintf("dst-seed-%d.html", s.cfg.Seed))
	if err := porcupine.VisualizePath(m, info, path); err != nil {
		s.failf("history not linearizable (%s); writing the visualization: %v", res, err)
	}
	s.res.Visualization = path
	s.failf("history of %d operations is not linearizable (%s): see %s", len(h), res, path)
}
