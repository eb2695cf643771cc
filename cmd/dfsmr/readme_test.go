package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// walkthroughMarker is the HTML comment that precedes each fenced block
// of README.md that TestReadmeWalkthrough runs.
const walkthroughMarker = "<!-- walkthrough"

// shellTools are the programs a walkthrough line may pipe dfsmr's output
// into. The runner checks the dfsmr part and skips them; any other
// program fails the test, so that the README cannot grow a line that is
// never run.
var shellTools = map[string]bool{"dot": true}

// walkthroughLine is one command of the walkthrough.
type walkthroughLine struct {
	text    string   // as written
	words   []string // the first command of the pipeline
	rest    [][]string
	comment string // after #
}

// TestReadmeWalkthrough runs the README's walkthrough, top to bottom, on
// a fresh database: each dfsmr line through the CLI's entry point, each
// grpcurl line by an equivalent call. A line succeeds unless its comment
// names a status code (ABORTED): then it must fail with that code. A
// "quoted phrase" in a dfsmr line's comment must appear in its output.
func TestReadmeWalkthrough(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := walkthroughBlocks(t, string(readme))
	if len(blocks) < 2 {
		t.Fatalf("README.md has %d walkthrough blocks (marked %q), want the CLI's and grpcurl's", len(blocks), walkthroughMarker)
	}
	c := mustCLI(t)
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ran := map[string]int{}
	for _, block := range blocks {
		for _, l := range block {
			ran[l.words[0]]++
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			switch l.words[0] {
			case "dfsmr":
				runDfsmrLine(ctx, t, c.addr, l)
			case "grpcurl":
				runGrpcurlLine(ctx, t, conn, l)
			default:
				t.Errorf("README walkthrough: %q: the runner knows dfsmr and grpcurl only", l.text)
			}
			cancel()
		}
	}
	if ran["dfsmr"] == 0 || ran["grpcurl"] == 0 {
		t.Errorf("ran %v: want dfsmr and grpcurl lines", ran)
	}
}

// walkthroughBlocks returns the command lines of every fenced block that
// follows a walkthrough marker.
func walkthroughBlocks(t *testing.T, readme string) [][]walkthroughLine {
	t.Helper()
	var blocks [][]walkthroughLine
	for _, part := range strings.Split(readme, walkthroughMarker)[1:] {
		// The block starts on the line after the marker.
		_, after, _ := strings.Cut(part, "\n")
		body, _, closed := strings.Cut(strings.TrimPrefix(after, "```sh\n"), "\n```\n")
		if !strings.HasPrefix(after, "```sh\n") || !closed {
			t.Fatalf("a walkthrough marker is not followed by a ```sh block")
		}
		var lines []walkthroughLine
		for text := range strings.Lines(body) {
			text = strings.TrimSpace(text)
			if text == "" || strings.HasPrefix(text, "#") {
				continue
			}
			lines = append(lines, parseLine(t, text))
		}
		blocks = append(blocks, lines)
	}
	return blocks
}

// parseLine splits a shell line into words (quotes removed), its pipeline
// and its comment. It knows what the README uses: '…' and "…" quoting,
// |, > FILE and a trailing # comment.
func parseLine(t *testing.T, text string) walkthroughLine {
	t.Helper()
	l := walkthroughLine{text: text}
	var (
		cmds  [][]string
		words []string
		word  strings.Builder
		inWrd bool
	)
	end := func() {
		if inWrd {
			words = append(words, word.String())
			word.Reset()
			inWrd = false
		}
	}
	for i := 0; i < len(text); i++ {
		switch ch := text[i]; {
		case ch == '\'' || ch == '"':
			j := strings.IndexByte(text[i+1:], ch)
			if j < 0 {
				t.Fatalf("README walkthrough: %q: unbalanced %c", text, ch)
			}
			word.WriteString(text[i+1 : i+1+j])
			inWrd = true
			i += j + 1
		case ch == ' ' || ch == '\t':
			end()
		case ch == '#' && !inWrd:
			l.comment = strings.TrimSpace(text[i+1:])
			i = len(text)
		case ch == '|':
			end()
			cmds = append(cmds, words)
			words = nil
		default:
			word.WriteByte(ch)
			inWrd = true
		}
	}
	end()
	cmds = append(cmds, words)
	for _, cmd := range cmds {
		if len(cmd) == 0 {
			t.Fatalf("README walkthrough: %q: an empty command", text)
		}
	}
	l.words, l.rest = cmds[0], cmds[1:]
	for i, w := range l.words {
		if w == ">" || w == "<" || w == "&&" || w == ";" || strings.HasPrefix(w, "$") {
			t.Fatalf("README walkthrough: %q: word %d (%q) needs a shell; the runner only knows pipes into %v", text, i, w, shellTools)
		}
	}
	for _, cmd := range l.rest {
		if !shellTools[cmd[0]] {
			t.Fatalf("README walkthrough: %q: pipes into %s, which is not in shellTools", text, cmd[0])
		}
	}
	return l
}

// expectedCode is the status code a line's comment says it fails with
// (ABORTED, NOT_FOUND, ...), or "" when it should succeed.
func expectedCode(comment string) string {
	for _, w := range regexp.MustCompile(`\b[A-Z][A-Z_]+[A-Z]\b`).FindAllString(comment, -1) {
		if v, ok := code.Code_value[w]; ok && v != 0 {
			return w
		}
	}
	return ""
}

// quoted returns the "phrases" of a comment.
func quoted(comment string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`"([^"]+)"`).FindAllStringSubmatch(comment, -1) {
		out = append(out, m[1])
	}
	return out
}

func runDfsmrLine(ctx context.Context, t *testing.T, addr string, l walkthroughLine) {
	t.Helper()
	var out, errb bytes.Buffer
	exit := run(ctx, append([]string{"--addr", addr}, l.words[1:]...), strings.NewReader(""), &out, &errb)
	t.Logf("$ %s\n%s%s", l.text, out.String(), errb.String())
	if want := expectedCode(l.comment); want != "" {
		if exit != exitFailed || !strings.HasPrefix(errb.String(), "dfsmr: "+want+": ") {
			t.Errorf("README walkthrough: %q: exit %d, stderr %q; the comment says it fails with %s", l.text, exit, errb.String(), want)
		}
		return
	}
	if exit != 0 {
		t.Errorf("README walkthrough: %q: exit %d\n%s", l.text, exit, errb.String())
		return
	}
	for _, q := range quoted(l.comment) {
		if !strings.Contains(out.String(), q) {
			t.Errorf("README walkthrough: %q: the comment promises %q, the output is\n%s", l.text, q, out.String())
		}
	}
}

// runGrpcurlLine does what grpcurl would do for the line: list the
// services, describe a symbol (with its comment), or call a method with
// the -d JSON, resolving the types from the compiled-in registry.
func runGrpcurlLine(ctx context.Context, t *testing.T, conn *grpc.ClientConn, l walkthroughLine) {
	t.Helper()
	var (
		data      string
		plaintext bool
		args      []string
	)
	w := l.words[1:]
	for i := 0; i < len(w); i++ {
		switch w[i] {
		case "-plaintext":
			plaintext = true
		case "-d":
			if i+1 == len(w) {
				t.Fatalf("README walkthrough: %q: -d without data", l.text)
			}
			data = w[i+1]
			i++
		default:
			if strings.HasPrefix(w[i], "-") {
				t.Fatalf("README walkthrough: %q: the runner does not know grpcurl's %s", l.text, w[i])
			}
			args = append(args, w[i])
		}
	}
	if !plaintext || len(args) < 2 || args[0] != server.DefaultAddr {
		t.Fatalf("README walkthrough: %q: want grpcurl -plaintext [-d JSON] %s VERB|METHOD", l.text, server.DefaultAddr)
	}
	t.Logf("$ %s", l.text)
	want := expectedCode(l.comment)
	switch verb, rest := args[1], args[2:]; {
	case verb == "list" && len(rest) == 0:
		listServices(ctx, t, conn)
	case verb == "describe" && len(rest) == 1:
		describe(ctx, t, conn, rest[0])
	case len(rest) == 0 && strings.Contains(verb, "/"):
		err := callJSON(ctx, t, conn, verb, data)
		if got := status.Code(err); want == "" && err != nil || want != "" && code.Code(got).String() != want {
			t.Errorf("README walkthrough: %q: %v; want %s", l.text, err, map[bool]string{true: "success", false: want}[want == ""])
		}
	default:
		t.Fatalf("README walkthrough: %q: the runner does not know this grpcurl form", l.text)
	}
}

// reflect sends one reflection request.
func reflect(ctx context.Context, t *testing.T, conn *grpc.ClientConn, req *reflectionv1.ServerReflectionRequest) *reflectionv1.ServerReflectionResponse {
	t.Helper()
	stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
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
		t.Fatalf("reflection: %s", e.GetErrorMessage())
	}
	return resp
}

// listServices checks that reflection lists every dfsmr service.
func listServices(ctx context.Context, t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	resp := reflect(ctx, t, conn, &reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}})
	listed := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		listed[s.GetName()] = true
	}
	protoregistry.GlobalFiles.RangeFilesByPackage("dfsmr.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			if name := string(fd.Services().Get(i).FullName()); !listed[name] {
				t.Errorf("grpcurl list: %s is not listed", name)
			}
		}
		return true
	})
}

// describe checks that reflection serves symbol with its comment, as
// grpcurl describe shows it.
func describe(ctx context.Context, t *testing.T, conn *grpc.ClientConn, symbol string) {
	t.Helper()
	resp := reflect(ctx, t, conn, &reflectionv1.ServerReflectionRequest{
		MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}})
	set := &descriptorpb.FileDescriptorSet{}
	for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		fd := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(b, fd); err != nil {
			t.Fatal(err)
		}
		set.File = append(set.File, fd)
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		t.Fatalf("grpcurl describe %s: %v", symbol, err)
	}
	d, err := files.FindDescriptorByName(protoreflect.FullName(symbol))
	if err != nil {
		t.Fatalf("grpcurl describe %s: %v", symbol, err)
	}
	if c := d.ParentFile().SourceLocations().ByDescriptor(d).LeadingComments; c == "" {
		t.Errorf("grpcurl describe %s: no comment", symbol)
	} else {
		t.Logf("// %s", strings.ReplaceAll(strings.TrimSpace(c), "\n", "\n// "))
	}
}

// callJSON calls method ("pkg.Service/Method") with the protojson request
// data, reading every response of a server stream until it ends.
func callJSON(ctx context.Context, t *testing.T, conn *grpc.ClientConn, method, data string) error {
	t.Helper()
	svc, name, _ := strings.Cut(method, "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if err != nil || !ok || sd.Methods().ByName(protoreflect.Name(name)) == nil {
		t.Fatalf("grpcurl %s: no such method (%v)", method, err)
	}
	md := sd.Methods().ByName(protoreflect.Name(name))
	newMsg := func(m protoreflect.MessageDescriptor) proto.Message {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(m.FullName())
		if err != nil {
			t.Fatal(err)
		}
		return mt.New().Interface()
	}
	req := newMsg(md.Input())
	if err := protojson.Unmarshal([]byte(data), req); err != nil {
		t.Fatalf("grpcurl %s: -d %s: %v", method, data, err)
	}
	full := "/" + method
	if md.IsStreamingClient() {
		t.Fatalf("grpcurl %s: the runner calls unary and server-streaming methods only", method)
	}
	if !md.IsStreamingServer() {
		resp := newMsg(md.Output())
		if err := conn.Invoke(ctx, full, req, resp); err != nil {
			return err
		}
		t.Log(protojson.Format(resp))
		return nil
	}
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, full)
	if err != nil {
		return err
	}
	if err := stream.SendMsg(req); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	for n := 0; ; n++ {
		resp := newMsg(md.Output())
		if err := stream.RecvMsg(resp); errors.Is(err, io.EOF) {
			if n == 0 {
				t.Errorf("grpcurl %s: the stream ended without a message", method)
			}
			return nil
		} else if err != nil {
			return err
		}
		t.Log(protojson.Format(resp))
	}
}

// TestReadmeJobIDs checks the job ids the README's Devices section
// describes: "o-7-01" .. "o-7-12" for --id o-7 --quantity 12, and an
// order id of "order-" and 16 hex digits when the server picks it.
func TestReadmeJobIDs(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"`--quantity 12` makes `o-7-01` .. `o-7-12`", "`order-` and 16 hex digits (`order-3f9c0a2be4d17856`", "jobs `order-3f9c0a2be4d17856-1`"} {
		if !strings.Contains(string(readme), want) {
			t.Fatalf("README.md no longer says %q: update this test with it", want)
		}
	}
	c := mustCLI(t)
	connectPrinter(t, c.addr, "p1", "lab")

	jobIDs := func(args ...string) (string, []string) {
		t.Helper()
		resp := decode(t, c.ok(append([]string{"-o", "json", "order", "--model", "benchy.gcode", "--pool", "lab"}, args...)...), &pb.SubmitOrderResponse{})
		var ids []string
		for _, j := range resp.GetJobs() {
			ids = append(ids, j.GetId())
		}
		return resp.GetOrderId(), ids
	}
	_, ids := jobIDs("--id", "o-7", "--quantity", "12")
	if len(ids) != 12 || ids[0] != "o-7-01" || ids[8] != "o-7-09" || ids[11] != "o-7-12" {
		t.Errorf("--id o-7 --quantity 12: jobs %v", ids)
	}
	order, ids := jobIDs("--quantity", "3")
	if !regexp.MustCompile(`^order-[0-9a-f]{16}$`).MatchString(order) || len(ids) != 3 || ids[0] != order+"-1" || ids[2] != order+"-3" {
		t.Errorf("an order without --id: %s, jobs %v", order, ids)
	}
}
