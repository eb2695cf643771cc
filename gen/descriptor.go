package gen

import _ "embed" // for DescriptorSet

// DescriptorSet is the google.protobuf.FileDescriptorSet of the dfsmr.v1
// protos with their comments (source_code_info), written by buf generate
// (internal/protoc-gen-descriptorset). The generated Go code leaves the
// comments out; the server serves this set through reflection so that
// `grpcurl describe` shows them. It holds only the dfsmr protos: their
// imports (the well-known types) resolve against the Go registry.
//
//go:embed dfsmr/v1/descriptor.binpb
var DescriptorSet []byte
