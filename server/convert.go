package server

import (
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The proto enums mirror the core's enums value for value (a test checks
// it), so conversion is a cast.

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func dur(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func instanceToProto(in *fsm.Instance, history []fsm.Change) *pb.Instance {
	out := &pb.Instance{
		Id:         in.ID,
		Machine:    in.Machine,
		Version:    in.Version,
		Node:       in.Node,
		Status:     pb.InstanceStatus(in.Status),
		Params:     in.Params,
		Priority:   in.Priority,
		Attempt:    in.Attempt,
		DueTime:    ts(in.DueAt),
		Token:      in.Token,
		Rev:        in.Rev,
		CreateTime: ts(in.CreatedAt),
		UpdateTime: ts(in.UpdatedAt),
	}
	if in.Status == fsm.StatusLeased {
		out.Lease = leaseToProto(&in.Lease)
	}
	for i := range history {
		out.History = append(out.History, changeToProto(&history[i]))
	}
	return out
}

func leaseToProto(l *fsm.Lease) *pb.Lease {
	return &pb.Lease{
		Token:       l.Token,
		Worker:      l.Worker,
		AcquireTime: ts(l.AcquiredAt),
		ExpireTime:  ts(l.ExpiresAt),
	}
}

func changeToProto(c *fsm.Change) *pb.Change {
	return &pb.Change{
		Seq:         c.Seq,
		Time:        ts(c.At),
		Actor:       c.Actor,
		Kind:        pb.ChangeKind(c.Kind),
		Instance:    c.Instance,
		Machine:     c.Machine,
		Version:     c.Version,
		FromVersion: c.FromVersion,
		Transition:  c.Transition,
		FromNode:    c.FromNode,
		ToNode:      c.ToNode,
		FromStatus:  pb.InstanceStatus(c.FromStatus),
		ToStatus:    pb.InstanceStatus(c.ToStatus),
		Token:       c.Token,
		Attempt:     c.Attempt,
		DueTime:     ts(c.DueAt),
		Params:      c.Params,
		Reason:      c.Reason,
		Device:      c.Device,
		Worker:      c.Worker,
	}
}

// breakerToProto describes b under policy p, the latest version's.
func breakerToProto(b fsm.Breaker, p fsm.BreakerPolicy) *pb.Breaker {
	return &pb.Breaker{
		State:        pb.BreakerState(b.State()),
		FailureShare: b.FailureShare(),
		Window:       uint32(b.Count),
		OpenTime:     ts(b.OpenedAt),
		ExtraDelay:   dur(b.ExtraDelay(p)),
	}
}

func machineToProto(info engine.MachineInfo) *pb.Machine {
	m := info.Machine
	out := &pb.Machine{
		Id:              m.ID,
		Version:         m.Version,
		Kind:            pb.MachineKind(m.Kind),
		UpgradeStrategy: pb.UpgradeStrategy(m.UpgradeStrategy),
		Description:     m.Description,
		StartNode:       m.Start,
		Source:          string(info.Record.Source),
		Fingerprint:     info.Record.Fingerprint,
		DefineTime:      ts(info.Record.DefinedAt),
	}
	for _, name := range m.Order {
		n := m.Nodes[name]
		pn := &pb.Node{Name: n.Name, Start: n.Name == m.Start, Final: n.Final, Blocking: n.Blocking}
		if !n.Final {
			pn.Timeout = &pb.Timeout{Fixed: dur(n.Timeout.Fixed), Percentile: n.Timeout.Percentile, Min: dur(n.Timeout.Min), Max: dur(n.Timeout.Max)}
			pn.Retry = &pb.Retry{MaxAttempts: n.Retry.MaxAttempts, Backoff: pb.Backoff(n.Retry.Backoff), Initial: dur(n.Retry.Initial), Max: dur(n.Retry.Max), Jitter: n.Retry.Jitter}
		}
		for _, tn := range n.Order {
			t := n.Transitions[tn]
			pn.Transitions = append(pn.Transitions, &pb.Transition{Name: t.Name, To: t.To, Delay: dur(t.Delay), Signal: t.Signal})
		}
		out.Nodes = append(out.Nodes, pn)
	}
	return out
}
