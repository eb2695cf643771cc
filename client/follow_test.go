package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// script is one scripted Changes call: the changes it delivers, then how it
// ends. openErr fails the call itself.
type script struct {
	openErr error
	header  metadata.MD // the response header, if any
	seqs    []uint64
	end     error
}

// headHeader is the response header reporting head.
func headHeader(head uint64) metadata.MD {
	return metadata.Pairs(client.HeadSeqHeader, fmt.Sprint(head))
}

// fakeChanges is a ChangesServiceClient that plays scripts in order and
// records each call's from_seq.
type fakeChanges struct {
	scripts []script
	froms   []uint64
}

func (f *fakeChanges) Changes(ctx context.Context, in *pb.ChangesRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[pb.ChangesResponse], error) {
	f.froms = append(f.froms, in.GetFromSeq())
	if len(f.scripts) == 0 {
		return nil, status.Error(codes.Internal, "no more scripts")
	}
	s := f.scripts[0]
	f.scripts = f.scripts[1:]
	if s.openErr != nil {
		return nil, s.openErr
	}
	return &fakeStream{s: s}, nil
}

type fakeStream struct {
	grpc.ClientStream // unused methods panic
	s                 script
}

func (f *fakeStream) Header() (metadata.MD, error) { return f.s.header, nil }

func (f *fakeStream) Recv() (*pb.ChangesResponse, error) {
	if len(f.s.seqs) == 0 {
		if f.s.end == nil {
			return nil, io.EOF
		}
		return nil, f.s.end
	}
	seq := f.s.seqs[0]
	f.s.seqs = f.s.seqs[1:]
	return &pb.ChangesResponse{Change: &pb.Change{Seq: seq}}, nil
}

func lagging(resume uint64) error {
	st, err := status.New(codes.Aborted, "watcher fell behind").WithDetails(&errdetails.ErrorInfo{
		Reason: "WATCHER_LAGGING", Domain: "dfsmr",
		Metadata: map[string]string{"resume_from_seq": fmt.Sprint(resume)},
	})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

// TestFollowResumes checks where Follow resumes after each kind of end.
func TestFollowResumes(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "server is shutting down")
	fake := &fakeChanges{scripts: []script{
		// A filtered stream lags: 7 and 8 did not match, the server says 9.
		{seqs: []uint64{5, 6}, end: lagging(9)},
		{seqs: []uint64{9}, end: unavailable},
		{openErr: unavailable},
		// ABORTED without details: resume after the last seq received.
		{seqs: []uint64{10}, end: status.Error(codes.Aborted, "lagging")},
		{seqs: []uint64{11}}, // ends without a status: resumed too
		{seqs: []uint64{12}},
	}}
	c := &client.Client{Changes: fake}
	stop := errors.New("stop")
	var got []uint64
	err := c.Follow(t.Context(), &pb.ChangesRequest{FromSeq: 5}, func(ch *pb.Change) error {
		got = append(got, ch.GetSeq())
		if ch.GetSeq() == 12 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Follow = %v, want the callback's error", err)
	}
	if fmt.Sprint(got) != "[5 6 9 10 11 12]" {
		t.Errorf("delivered %v", got)
	}
	if fmt.Sprint(fake.froms) != "[5 9 10 10 11 12]" {
		t.Errorf("from_seq of each call: %v", fake.froms)
	}
}

func TestFollowReturnsOtherStatuses(t *testing.T) {
	for _, code := range []codes.Code{codes.OutOfRange, codes.InvalidArgument, codes.PermissionDenied, codes.Internal} {
		fake := &fakeChanges{scripts: []script{{seqs: []uint64{1}, end: status.Error(code, "no")}}}
		c := &client.Client{Changes: fake}
		err := c.Follow(t.Context(), &pb.ChangesRequest{FromSeq: 1}, func(*pb.Change) error { return nil })
		if status.Code(err) != code {
			t.Errorf("Follow = %v, want %v", err, code)
		}
	}
}

func TestFollowContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	fake := &fakeChanges{scripts: []script{{seqs: []uint64{1}, end: status.Error(codes.Unavailable, "down")}}}
	c := &client.Client{Changes: fake}
	err := c.Follow(ctx, &pb.ChangesRequest{FromSeq: 1}, func(*pb.Change) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow = %v, want context.Canceled", err)
	}
}

// TestFollowFromNow: "from now" is the head in the first stream's header +
// 1, so that a resume before the first change misses nothing.
func TestFollowFromNow(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "server is shutting down")
	fake := &fakeChanges{scripts: []script{
		{header: headHeader(41), end: unavailable},
		{header: headHeader(43), seqs: []uint64{42, 43}},
	}}
	c := &client.Client{Changes: fake}
	var resolved []uint64
	defer client.SetTestHookResolved(func(from uint64) { resolved = append(resolved, from) })()
	stop := errors.New("stop")
	var got []uint64
	err := c.Follow(t.Context(), &pb.ChangesRequest{}, func(ch *pb.Change) error {
		got = append(got, ch.GetSeq())
		if ch.GetSeq() == 43 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Follow = %v, want the callback's error", err)
	}
	if fmt.Sprint(got, fake.froms, resolved) != "[42 43] [0 42] [42]" {
		t.Errorf("delivered %v, from_seq of each call %v, resolved %v", got, fake.froms, resolved)
	}

	// Without the header, Follow keeps asking from now.
	fake = &fakeChanges{scripts: []script{
		{end: unavailable},
		{seqs: []uint64{7}},
	}}
	c = &client.Client{Changes: fake}
	err = c.Follow(t.Context(), &pb.ChangesRequest{}, func(*pb.Change) error { return stop })
	if !errors.Is(err, stop) || fmt.Sprint(fake.froms) != "[0 0]" {
		t.Fatalf("Follow = %v with from_seq %v, want the callback's error with [0 0]", err, fake.froms)
	}
}

// TestFollowStopAtHeadResumes: a StopAtHead follow returns nil when the
// stream ends with OK, and stops at the first stream's head even when a
// resumed stream goes further.
func TestFollowStopAtHeadResumes(t *testing.T) {
	fake := &fakeChanges{scripts: []script{
		{header: headHeader(10), seqs: []uint64{5, 6}, end: status.Error(codes.Unavailable, "restart")},
		{header: headHeader(12), seqs: []uint64{8, 10, 11, 12}},
	}}
	c := &client.Client{Changes: fake}
	var got []uint64
	err := c.Follow(t.Context(), &pb.ChangesRequest{FromSeq: 5, StopAtHead: true}, func(ch *pb.Change) error {
		got = append(got, ch.GetSeq())
		return nil
	})
	if err != nil {
		t.Fatalf("Follow = %v, want nil", err)
	}
	if fmt.Sprint(got, fake.froms) != "[5 6 8 10] [5 7]" {
		t.Errorf("delivered %v, from_seq of each call %v", got, fake.froms)
	}

	// Ended with OK before the last (filtered out) changes up to the head.
	fake = &fakeChanges{scripts: []script{{header: headHeader(10), seqs: []uint64{3}}}}
	c = &client.Client{Changes: fake}
	got = nil
	err = c.Follow(t.Context(), &pb.ChangesRequest{FromSeq: 1, StopAtHead: true}, func(ch *pb.Change) error {
		got = append(got, ch.GetSeq())
		return nil
	})
	if err != nil || fmt.Sprint(got, fake.froms) != "[3] [1]" {
		t.Fatalf("Follow = %v, delivered %v with from_seq %v; want nil, [3], [1]", err, got, fake.froms)
	}
}
