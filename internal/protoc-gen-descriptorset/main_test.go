package main

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

func file(name string, withSource bool) *descriptorpb.FileDescriptorProto {
	f := &descriptorpb.FileDescriptorProto{Name: proto.String(name), Syntax: proto.String("proto3")}
	if withSource {
		f.SourceCodeInfo = &descriptorpb.SourceCodeInfo{Location: []*descriptorpb.SourceCodeInfo_Location{
			{Path: []int32{4, 0}, Span: []int32{1, 0, 2}, LeadingComments: proto.String(" A comment on " + name + ".\n")}}}
	}
	return f
}

// TestGenerate runs the plugin as buf does, on stdin and stdout: the set
// holds the files to generate, in request order, with their comments,
// and the same request gives the same bytes.
func TestGenerate(t *testing.T) {
	req := &pluginpb.CodeGeneratorRequest{
		FileToGenerate: []string{"b.proto", "a.proto"},
		Parameter:      proto.String("name=x/set.binpb"),
		ProtoFile:      []*descriptorpb.FileDescriptorProto{file("dep.proto", false), file("a.proto", true), file("b.proto", true)},
	}
	in, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var outs [2]bytes.Buffer
	for i := range outs {
		if err := run(bytes.NewReader(in), &outs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(outs[0].Bytes(), outs[1].Bytes()) {
		t.Fatal("two runs gave different bytes")
	}
	resp := &pluginpb.CodeGeneratorResponse{}
	if err := proto.Unmarshal(outs[0].Bytes(), resp); err != nil {
		t.Fatal(err)
	}
	if resp.Error != nil || len(resp.GetFile()) != 1 || resp.GetFile()[0].GetName() != "x/set.binpb" {
		t.Fatalf("response %v", resp)
	}
	set := &descriptorpb.FileDescriptorSet{}
	if err := proto.Unmarshal([]byte(resp.GetFile()[0].GetContent()), set); err != nil {
		t.Fatal(err)
	}
	if len(set.GetFile()) != 2 || set.GetFile()[0].GetName() != "a.proto" || set.GetFile()[1].GetName() != "b.proto" {
		t.Fatalf("set of %d files, want a.proto and b.proto in request order", len(set.GetFile()))
	}
	if got := set.GetFile()[1].GetSourceCodeInfo().GetLocation()[0].GetLeadingComments(); got != " A comment on b.proto.\n" {
		t.Errorf("comment %q", got)
	}
}

// TestGenerateErrors: what the plugin refuses, reported to buf.
func TestGenerateErrors(t *testing.T) {
	for _, tc := range []struct {
		req  *pluginpb.CodeGeneratorRequest
		want string
	}{
		{&pluginpb.CodeGeneratorRequest{FileToGenerate: []string{"a.proto"}, ProtoFile: []*descriptorpb.FileDescriptorProto{file("a.proto", false)}}, "no source info"},
		{&pluginpb.CodeGeneratorRequest{FileToGenerate: []string{"a.proto"}, Parameter: proto.String("out=x"), ProtoFile: []*descriptorpb.FileDescriptorProto{file("a.proto", true)}}, `unknown parameter "out=x"`},
		{&pluginpb.CodeGeneratorRequest{FileToGenerate: []string{"a.proto"}, Parameter: proto.String("name="), ProtoFile: []*descriptorpb.FileDescriptorProto{file("a.proto", true)}}, "empty file name"},
		{&pluginpb.CodeGeneratorRequest{FileToGenerate: []string{"a.proto", "c.proto"}, ProtoFile: []*descriptorpb.FileDescriptorProto{file("a.proto", true)}}, "missing"},
	} {
		resp := generate(tc.req)
		if !strings.Contains(resp.GetError(), tc.want) || len(resp.GetFile()) != 0 {
			t.Errorf("%v: error %q, %d files; want %q", tc.req, resp.GetError(), len(resp.GetFile()), tc.want)
		}
	}
}
