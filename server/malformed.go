package server

import (
	"context"
	"fmt"
	"sync"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// malformed turns requests that do not decode (invalid UTF-8 in a string,
// a truncated field) into INVALID_ARGUMENT naming the field.
//
// gRPC reports a request its codec cannot decode as INTERNAL, the code of a
// server bug, and for unary calls it decodes before any interceptor runs.
// So the codec decodes leniently: on failure it leaves the message empty,
// notes the error under the message, and reports success; the interceptors
// below, which see every request, then answer with the noted error before
// any handler sees the empty message.
type malformed struct {
	encoding.CodecV2
	bad sync.Map // request message (a pointer) -> error
}

func newMalformed() *malformed {
	return &malformed{CodecV2: encoding.GetCodecV2("proto")}
}

// Unmarshal decodes data into v, or notes why it cannot.
func (c *malformed) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	m, ok := v.(proto.Message)
	if err == nil || !ok {
		return err
	}
	proto.Reset(m)
	desc := m.ProtoReflect().Descriptor()
	msg := fmt.Sprintf("the request is not a valid %s: %v", desc.FullName(), err)
	st := status.New(codes.InvalidArgument, msg)
	if field := badUTF8(desc, data.Materialize(), "", 0); field != "" {
		if d, derr := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: field, Description: "is not valid UTF-8"},
		}}); derr == nil {
			st = d
		}
	}
	c.bad.Store(v, st.Err())
	return nil
}

// take returns and forgets the error noted for request m.
func (c *malformed) take(m any) error {
	if err, ok := c.bad.LoadAndDelete(m); ok {
		return err.(error)
	}
	return nil
}

func (c *malformed) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := c.take(req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func (c *malformed) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, checkedStream{ServerStream: ss, c: c})
	}
}

// checkedStream fails a RecvMsg whose message did not decode.
type checkedStream struct {
	grpc.ServerStream
	c *malformed
}

func (s checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.c.take(m)
}

// maxUTF8Depth bounds how deep badUTF8 looks into nested messages.
const maxUTF8Depth = 32

// badUTF8 returns the path of the first string field of b (a message of
// type desc) that is not valid UTF-8, or "" when there is none, b does
// not parse far enough to tell, or it is nested deeper than maxUTF8Depth.
func badUTF8(desc protoreflect.MessageDescriptor, b []byte, prefix string, depth int) string {
	if depth > maxUTF8Depth {
		return ""
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return ""
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		fd := desc.Fields().ByNumber(num)
		if fd == nil {
			continue
		}
		switch fd.Kind() {
		case protoreflect.StringKind:
			if !utf8.Valid(v) {
				return prefix + string(fd.Name())
			}
		case protoreflect.MessageKind:
			if p := badUTF8(fd.Message(), v, prefix+string(fd.Name())+".", depth+1); p != "" {
				return p
			}
		}
	}
	return ""
}
