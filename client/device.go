package client

import (
	"context"
	"sync"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"google.golang.org/grpc"
)

// DeviceState is what a device reports: its node in its device machine,
// the job it holds (empty when none), the job's progress in [0, 1], and
// the seq of the last command it carried out (0: none), which the device
// must keep across power cuts (see DeviceReport.last_command_seq).
type DeviceState struct {
	Node        string
	Job         string
	Progress    float64
	LastCommand uint64
}

// Device is one device's Connect stream: the device side of the reactive
// loop. Report and Reject send the device's state; Recv returns the
// server's answers (one per report, report_seq set) and the commands of
// rounds the server runs on its own (report_seq 0). Sends are safe for
// concurrent use; call Recv from one goroutine.
type Device struct {
	stream grpc.BidiStreamingClient[pb.ConnectRequest, pb.ConnectResponse]
	cancel context.CancelFunc

	mu  sync.Mutex
	seq uint64
}

// ConnectDevice opens a Connect stream, registers the device and reports
// its state (report seq 1). The first answer, to that report, is the
// first Recv.
func (c *Client) ConnectDevice(ctx context.Context, reg *pb.DeviceRegistration, state DeviceState) (*Device, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.Devices.Connect(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	d := &Device{stream: stream, cancel: cancel}
	if err := d.send(reg, state, nil); err != nil {
		cancel()
		return nil, err
	}
	return d, nil
}

// Report sends the device's state and returns the report's seq.
func (d *Device) Report(state DeviceState) (uint64, error) {
	return d.seqOf(d.send(nil, state, nil))
}

// Reject sends the device's state with its refusal of command seq cmd
// (stale: it no longer matched the device's state).
func (d *Device) Reject(state DeviceState, cmd uint64, reason string) (uint64, error) {
	return d.seqOf(d.send(nil, state, &pb.CommandRejection{CommandSeq: cmd, Reason: reason}))
}

func (d *Device) seqOf(err error) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.seq, err
}

func (d *Device) send(reg *pb.DeviceRegistration, s DeviceState, rej *pb.CommandRejection) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	return d.stream.Send(&pb.ConnectRequest{
		Register: reg,
		Report: &pb.DeviceReport{Seq: d.seq, Node: s.Node, JobId: s.Job, Progress: s.Progress, Rejection: rej,
			LastCommandSeq: s.LastCommand},
	})
}

// Recv returns the server's next answer or command. The stream's end is
// io.EOF after Close, and the server's status otherwise (ABORTED when a
// newer stream of the device took over).
func (d *Device) Recv() (*pb.ConnectResponse, error) { return d.stream.Recv() }

// Close says goodbye: it closes the device's side of the stream. The
// server marks the device offline and then ends the stream: Recv returns
// io.EOF once that is done. Keep calling Recv until then; Drop releases
// the stream at any time.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stream.CloseSend()
}

// Drop ends the stream without a goodbye, as a pulled cable or a power
// cut would: the server notices the connection is gone.
func (d *Device) Drop() { d.cancel() }
