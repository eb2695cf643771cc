package server

import (
	"fmt"
	"sync"

	"github.com/dfsmr/dfsmr/gen"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// registerReflection registers server reflection (v1 and v1alpha, as
// reflection.Register does) serving the dfsmr protos with their comments,
// so that `grpcurl describe` shows what each field means.
func registerReflection(s *grpc.Server) error {
	files, err := commentedFiles()
	if err != nil {
		return err
	}
	opts := reflection.ServerOptions{Services: s, DescriptorResolver: files}
	reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(s, reflection.NewServer(opts))
	return nil
}

// commentedFiles parses gen.DescriptorSet once: the dfsmr protos with
// their source info, ahead of the global registry, which serves the rest
// (health, reflection, the well-known types the dfsmr protos import).
var commentedFiles = sync.OnceValues(func() (layeredFiles, error) {
	set := &descriptorpb.FileDescriptorSet{}
	if err := proto.Unmarshal(gen.DescriptorSet, set); err != nil {
		return layeredFiles{}, fmt.Errorf("embedded descriptor set: %w", err)
	}
	l := layeredFiles{first: &protoregistry.Files{}, then: protoregistry.GlobalFiles}
	for _, fdp := range set.GetFile() { // dependencies first
		fd, err := protodesc.NewFile(fdp, l)
		if err != nil {
			return layeredFiles{}, fmt.Errorf("embedded descriptor set: %w", err)
		}
		if err := l.first.RegisterFile(fd); err != nil {
			return layeredFiles{}, fmt.Errorf("embedded descriptor set: %w", err)
		}
	}
	return l, nil
})

// layeredFiles looks a file or name up in first, then in then.
type layeredFiles struct {
	first, then *protoregistry.Files
}

func (l layeredFiles) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := l.first.FindFileByPath(path); err == nil {
		return fd, nil
	}
	return l.then.FindFileByPath(path)
}

func (l layeredFiles) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := l.first.FindDescriptorByName(name); err == nil {
		return d, nil
	}
	return l.then.FindDescriptorByName(name)
}
