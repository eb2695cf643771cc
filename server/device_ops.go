package server

import (
	"context"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server/fsm"
)

func (h *handlers) SignalDevice(ctx context.Context, req *pb.SignalDeviceRequest) (*pb.SignalDeviceResponse, error) {
	if err := checkNames("device_id", req.GetDeviceId()); err != nil {
		return nil, err
	}
	d, err := h.eng.SignalDevice(ctx, req.GetDeviceId(), req.GetSignal(), actor(ctx))
	if err != nil {
		return nil, err
	}
	return &pb.SignalDeviceResponse{Device: deviceToProto(&d, -1)}, nil
}

func (h *handlers) GetOrder(ctx context.Context, req *pb.GetOrderRequest) (*pb.GetOrderResponse, error) {
	if err := checkNames("order_id", req.GetOrderId()); err != nil {
		return nil, err
	}
	release, err := h.reads.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	o, err := h.eng.GetOrder(ctx, req.GetOrderId())
	if err != nil {
		return nil, err
	}
	resp := &pb.GetOrderResponse{OrderId: o.ID, Nodes: map[string]uint32{}, Reprints: uint32(o.Reprints)}
	for i := range o.Jobs {
		resp.Jobs = append(resp.Jobs, instanceToProto(&o.Jobs[i], nil))
		resp.Nodes[o.Jobs[i].Node]++
	}
	return resp, nil
}

func (h *handlers) ReprintJob(ctx context.Context, req *pb.ReprintJobRequest) (*pb.ReprintJobResponse, error) {
	in, err := h.eng.ReprintJob(ctx, req.GetJobId(), actor(ctx))
	if err != nil {
		return nil, err
	}
	return &pb.ReprintJobResponse{Job: instanceToProto(&in, nil)}, nil
}

// deviceToProto converts a device; queueLen < 0 leaves queue_length unset.
func deviceToProto(d *fsm.Device, queueLen int) *pb.Device {
	p := &pb.Device{
		Id: d.ID, Pool: d.Pool, Capabilities: d.Capabilities, Machine: d.Machine,
		Online: d.Online, LastSeenTime: ts(d.LastSeen), Node: d.Node, JobId: d.Job,
		Progress: d.Progress, ReportSeq: d.ReportSeq, CommandSeq: d.CommandSeq,
	}
	if queueLen >= 0 {
		p.QueueLength = uint32(queueLen)
	}
	return p
}
