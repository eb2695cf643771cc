// Command protoc-gen-descriptorset is a protoc (buf) plugin that writes the
// files to generate, with their comments (source_code_info), as one
// google.protobuf.FileDescriptorSet. The server embeds the set and serves
// it through gRPC reflection, so that `grpcurl describe` shows the proto
// comments, which the generated Go code leaves out.
//
// Parameter: name=PATH, the output file relative to the plugin's out
// directory (default descriptor.binpb). The set holds only the files to
// generate, in the request's dependency order; their imports (the
// well-known types) are left to the Go registry, which has them already.
// The bytes are deterministic: the same protos give the same file.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// defaultName is the output file when the parameter names none.
const defaultName = "descriptor.binpb"

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "protoc-gen-descriptorset:", err)
		os.Exit(1)
	}
}

func run(stdin io.Reader, stdout io.Writer) error {
	in, err := io.ReadAll(stdin)
	if err != nil {
		return err
	}
	req := &pluginpb.CodeGeneratorRequest{}
	if err := proto.Unmarshal(in, req); err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	resp := generate(req)
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(resp)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// generate answers req with the set, or with the error a plugin reports
// to its caller.
func generate(req *pluginpb.CodeGeneratorRequest) *pluginpb.CodeGeneratorResponse {
	features := uint64(pluginpb.CodeGeneratorResponse_FEATURE_PROTO3_OPTIONAL)
	resp := &pluginpb.CodeGeneratorResponse{SupportedFeatures: &features}
	name, set, err := descriptorSet(req)
	if err == nil {
		var b []byte
		b, err = proto.MarshalOptions{Deterministic: true}.Marshal(set)
		resp.File = []*pluginpb.CodeGeneratorResponse_File{{Name: proto.String(name), Content: proto.String(string(b))}}
	}
	if err != nil {
		resp.File = nil
		resp.Error = proto.String(err.Error())
	}
	return resp
}

// descriptorSet returns the output name and the files to generate, in
// proto_file order (dependencies first), with their source info.
func descriptorSet(req *pluginpb.CodeGeneratorRequest) (string, *descriptorpb.FileDescriptorSet, error) {
	name := defaultName
	for p := range strings.SplitSeq(req.GetParameter(), ",") {
		switch k, v, _ := strings.Cut(p, "="); k {
		case "":
		case "name":
			if v == "" {
				return "", nil, errors.New("name=: empty file name")
			}
			name = v
		default:
			return "", nil, fmt.Errorf("unknown parameter %q (want name=PATH)", p)
		}
	}
	gen := make(map[string]bool, len(req.GetFileToGenerate()))
	for _, f := range req.GetFileToGenerate() {
		gen[f] = true
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, f := range req.GetProtoFile() {
		if !gen[f.GetName()] {
			continue
		}
		if f.GetSourceCodeInfo() == nil {
			return "", nil, fmt.Errorf("%s: the request carries no source info (comments)", f.GetName())
		}
		set.File = append(set.File, f)
	}
	if len(set.File) != len(gen) {
		return "", nil, errors.New("a file to generate is missing from proto_file")
	}
	return name, set, nil
}
