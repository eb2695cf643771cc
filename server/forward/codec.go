package forward

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// Frame is one message of a forwarded call as it travels on the wire. The
// codec of [Forwarder.ServerOptions] passes it through without decoding
// or encoding it: receiving a Frame keeps the received buffers, sending it
// hands them to gRPC, which frees them once written. A Frame is sent at
// most once.
type Frame struct {
	data mem.BufferSlice
}

// Bytes returns a copy of the frame's message bytes.
func (f *Frame) Bytes() []byte { return f.data.Materialize() }

// codec passes Frames through and gives every other message to next.
type codec struct {
	next encoding.CodecV2
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*Frame)
	if !ok {
		return c.next.Marshal(v)
	}
	// gRPC frees what Marshal returns once it is written: the frame's
	// references go with it.
	data := f.data
	f.data = nil
	return data, nil
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*Frame)
	if !ok {
		return c.next.Unmarshal(data, v)
	}
	// gRPC frees data when Unmarshal returns; the frame keeps its own
	// reference until it is sent.
	f.data.Free()
	data.Ref()
	f.data = data
	return nil
}

func (c codec) Name() string { return c.next.Name() }
