package server

import (
	"context"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server/store"
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

// deviceToProto converts a device; queueLen < 0 leaves queue_length unset.
func deviceToProto(d *store.Device, queueLen int) *pb.Device {
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
