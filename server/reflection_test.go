package server_test

import (
	"strings"
	"testing"

	"github.com/dfsmr/dfsmr/gen"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// reflectFiles sends one v1 reflection request and returns the file
// descriptors of the answer by name.
func reflectFiles(t *testing.T, conn *grpc.ClientConn, req *reflectionv1.ServerReflectionRequest) map[string]*descriptorpb.FileDescriptorProto {
	t.Helper()
	stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if e := resp.GetErrorResponse(); e != nil {
		t.Fatalf("reflection %v: error %d %s", req.GetMessageRequest(), e.GetErrorCode(), e.GetErrorMessage())
	}
	return decodeFiles(t, resp.GetFileDescriptorResponse().GetFileDescriptorProto())
}

func decodeFiles(t *testing.T, raw [][]byte) map[string]*descriptorpb.FileDescriptorProto {
	t.Helper()
	files := map[string]*descriptorpb.FileDescriptorProto{}
	for _, b := range raw {
		fd := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(b, fd); err != nil {
			t.Fatal(err)
		}
		files[fd.GetName()] = fd
	}
	return files
}

// comments joins the leading comments of a file's source info.
func comments(fd *descriptorpb.FileDescriptorProto) string {
	var b strings.Builder
	for _, loc := range fd.GetSourceCodeInfo().GetLocation() {
		b.WriteString(loc.GetLeadingComments())
	}
	return b.String()
}

// TestReflectionServesComments asks a real server's reflection for the
// dfsmr protos, by file name and by symbol, as grpcurl describe does:
// they come with their comments. Health and reflection stay served.
func TestReflectionServesComments(t *testing.T) {
	env := mustServer(t, server.Config{NoBundled: true})

	files := reflectFiles(t, env.conn, &reflectionv1.ServerReflectionRequest{
		MessageRequest: &reflectionv1.ServerReflectionRequest_FileByFilename{FileByFilename: "dfsmr/v1/work_service.proto"}})
	work := files["dfsmr/v1/work_service.proto"]
	if work == nil {
		t.Fatalf("no work_service.proto in %d files", len(files))
	}
	const sentence = "WorkService hands work out to workers."
	if !strings.Contains(comments(work), sentence) {
		t.Fatalf("work_service.proto without the comment %q; source info has %d locations", sentence, len(work.GetSourceCodeInfo().GetLocation()))
	}
	if files["dfsmr/v1/instance.proto"] == nil || files["google/protobuf/duration.proto"] == nil {
		t.Errorf("the answer lacks work_service.proto's imports: %d files", len(files))
	}

	// grpcurl describe dfsmr.v1.ReadyRequest: by symbol, a field's comment.
	files = reflectFiles(t, env.conn, &reflectionv1.ServerReflectionRequest{
		MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "dfsmr.v1.ReadyRequest"}})
	if c := comments(files["dfsmr/v1/work_service.proto"]); !strings.Contains(c, "Only instances in this node. Empty: any node.") {
		t.Errorf("dfsmr.v1.ReadyRequest: the field comments are missing:\n%s", c)
	}
	files = reflectFiles(t, env.conn, &reflectionv1.ServerReflectionRequest{
		MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "grpc.health.v1.Health"}})
	if len(files) == 0 {
		t.Error("grpc.health.v1.Health is not served")
	}

	// Older clients ask v1alpha: the same comments.
	alpha, err := reflectionv1alpha.NewServerReflectionClient(env.conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer alpha.CloseSend()
	if err := alpha.Send(&reflectionv1alpha.ServerReflectionRequest{
		MessageRequest: &reflectionv1alpha.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "dfsmr.v1.WorkService"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := alpha.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if c := comments(decodeFiles(t, resp.GetFileDescriptorResponse().GetFileDescriptorProto())["dfsmr/v1/work_service.proto"]); !strings.Contains(c, sentence) {
		t.Errorf("v1alpha: work_service.proto without its comments")
	}
}

// TestReflectionSetMatchesGeneratedCode checks that the embedded
// descriptor set is the one the Go code was generated from: the same
// files, equal but for the comments. A proto edited without
// regenerating fails here.
func TestReflectionSetMatchesGeneratedCode(t *testing.T) {
	set := &descriptorpb.FileDescriptorSet{}
	if err := proto.Unmarshal(gen.DescriptorSet, set); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	pkg := pb.File_dfsmr_v1_work_service_proto.Package()
	protoregistry.GlobalFiles.RangeFilesByPackage(pkg, func(fd protoreflect.FileDescriptor) bool {
		want[fd.Path()] = true
		return true
	})
	for _, fdp := range set.GetFile() {
		if !want[fdp.GetName()] {
			t.Errorf("the set has %s, which the Go code lacks", fdp.GetName())
			continue
		}
		delete(want, fdp.GetName())
		if len(fdp.GetSourceCodeInfo().GetLocation()) == 0 {
			t.Errorf("%s: no source info", fdp.GetName())
		}
		fd, _ := protoregistry.GlobalFiles.FindFileByPath(fdp.GetName())
		compiled := protodesc.ToFileDescriptorProto(fd)
		embedded := proto.CloneOf(fdp)
		embedded.SourceCodeInfo = nil
		if !proto.Equal(compiled, embedded) {
			t.Errorf("%s differs from the generated Go code: run go tool buf generate", fdp.GetName())
		}
	}
	for name := range want {
		t.Errorf("the set lacks %s", name)
	}
}
