package server

import (
	"context"
	"math"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server/auth"
	"github.com/dfsmr/dfsmr/server/device"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"google.golang.org/grpc"
)

// Connect runs one device's reactive loop; the session does the IO, the
// engine every round.
func (h *handlers) Connect(stream grpc.BidiStreamingServer[pb.ConnectRequest, pb.ConnectResponse]) error {
	return h.sessions.Serve(stream.Context(), h.eng, deviceConn{stream})
}

// deviceConn translates a Connect stream for the session.
type deviceConn struct {
	s grpc.BidiStreamingServer[pb.ConnectRequest, pb.ConnectResponse]
}

func (c deviceConn) Recv() (device.Message, error) {
	req, err := c.s.Recv()
	if err != nil {
		return device.Message{}, err
	}
	var m device.Message
	if r := req.GetRegister(); r != nil {
		if err := checkNames("register.device_id", r.GetDeviceId(), "register.pool", r.GetPool()); err != nil {
			return device.Message{}, err
		}
		if err := auth.CheckDevice(c.s.Context(), r.GetDeviceId()); err != nil {
			return device.Message{}, err
		}
		m.Register = &device.Registration{ID: r.GetDeviceId(), Pool: r.GetPool(), Capabilities: r.GetCapabilities(), Machine: r.GetMachine()}
	}
	rep := req.GetReport()
	if rep == nil {
		return device.Message{}, &fsm.InvalidError{Field: "report", Reason: "required on every message"}
	}
	m.Report = fsm.DeviceReport{Seq: rep.GetSeq(), Node: rep.GetNode(), Job: rep.GetJobId(), Progress: rep.GetProgress(), LastCommand: rep.GetLastCommandSeq()}
	if rej := rep.GetRejection(); rej != nil {
		m.Report.Rejection = &fsm.Rejection{CommandSeq: rej.GetCommandSeq(), Reason: rej.GetReason()}
	}
	return m, nil
}

func (c deviceConn) Send(reportSeq uint64, cmd *fsm.DeviceCommand) error {
	resp := &pb.ConnectResponse{ReportSeq: reportSeq}
	if cmd != nil {
		resp.Command = &pb.DeviceCommand{Seq: cmd.Seq, Name: cmd.Name, Node: cmd.Node, JobId: cmd.Job, Params: cmd.Params}
	}
	return c.s.Send(resp)
}

func (h *handlers) ListDevices(ctx context.Context, req *pb.ListDevicesRequest) (*pb.ListDevicesResponse, error) {
	n, after, err := pageArgs(req.GetPageSize(), req.GetPageToken(), tokenDevices, req.GetPool())
	if err != nil {
		return nil, err
	}
	release, err := h.reads.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	resp := &pb.ListDevicesResponse{}
	b, last := pageBudget{n: n}, ""
	err = h.eng.ListDevices(ctx, req.GetPool(), after, func(d engine.DeviceInfo) bool {
		p := deviceToProto(&d.Device, d.QueueLen)
		if !b.add(p) {
			return false
		}
		resp.Devices, last = append(resp.Devices, p), d.ID
		return true
	})
	if err != nil {
		return nil, err
	}
	if b.full {
		resp.NextPageToken = encodePageToken([]byte(last), tokenDevices, req.GetPool())
	}
	return resp, nil
}

func (h *handlers) SubmitOrder(ctx context.Context, req *pb.SubmitOrderRequest) (*pb.SubmitOrderResponse, error) {
	if err := checkNames("order_id", req.GetOrderId(), "pool", req.GetPool()); err != nil {
		return nil, err
	}
	q := req.GetQuantity()
	if q > math.MaxInt32 {
		return nil, &fsm.InvalidError{Field: "quantity", Reason: "is too large"}
	}
	id, jobs, err := h.eng.SubmitOrder(ctx, engine.OrderArgs{
		ID: req.GetOrderId(), Model: req.GetModel(), Quantity: int(q),
		Printer: req.GetPrinter(), Pool: req.GetPool(), Priority: req.GetPriority(), Actor: actor(ctx),
	})
	if err != nil {
		return nil, err
	}
	resp := &pb.SubmitOrderResponse{OrderId: id}
	for i := range jobs {
		resp.Jobs = append(resp.Jobs, instanceToProto(&jobs[i], nil))
	}
	return resp, nil
}
