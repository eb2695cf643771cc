package main

import (
	"fmt"
	"github.com/dfsmr/dfsmr/machines"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// jsonOptions: every scalar field is present (created: false, attempt: 0),
// so that scripts need no defaults; one object per line.
var jsonOptions = protojson.MarshalOptions{EmitDefaultValues: true}

// json reports whether the output is JSON.
func (a *app) json() bool { return a.output == outputJSON }

// printJSON writes m as one line of protojson.
func (a *app) printJSON(m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = a.stdout.Write(b)
	return err
}

// unary is the body of a command that makes one call: it dials, calls and
// prints the response as JSON or, with table, as text.
func unary[R proto.Message](a *app, call func(*client.Client) (R, error), table func(R) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	resp, err := call(c)
	if err != nil {
		return err
	}
	if a.json() {
		return a.printJSON(resp)
	}
	return table(resp)
}

// table is a tabwriter with a header; Flush prints it.
type table struct{ *tabwriter.Writer }

func newTable(w io.Writer, header ...string) table {
	t := table{tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(toAny(header)...)
	}
	return t
}

func (t table) row(cells ...any) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(t, "\t")
		}
		fmt.Fprint(t, c)
	}
	io.WriteString(t, "\n")
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// ts formats a time as UTC RFC 3339; "-" when unset.
func ts(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

// dur formats a duration; "-" when unset or zero.
func dur(d *durationpb.Duration) string {
	if d.AsDuration() == 0 {
		return "-"
	}
	return machines.FormatDuration(d.AsDuration())
}

// enumName turns INSTANCE_STATUS_READY into "ready".
func enumName(full, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(full, prefix))
}

func statusName(s pb.InstanceStatus) string {
	if s == pb.InstanceStatus_INSTANCE_STATUS_UNSPECIFIED {
		return "-"
	}
	return enumName(s.String(), "INSTANCE_STATUS_")
}

func kindName(k pb.MachineKind) string  { return enumName(k.String(), "MACHINE_KIND_") }
func changeName(k pb.ChangeKind) string { return enumName(k.String(), "CHANGE_KIND_") }
func backoffName(b pb.Backoff) string   { return enumName(b.String(), "BACKOFF_") }
func breakerName(s pb.BreakerState) string {
	return enumName(s.String(), "BREAKER_STATE_")
}
func upgradeName(u pb.UpgradeStrategy) string {
	return enumName(u.String(), "UPGRADE_STRATEGY_")
}

// params formats params as sorted k=v pairs separated by spaces; "-" when
// empty.
func params(p map[string]string) string {
	if len(p) == 0 {
		return "-"
	}
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(p)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte('=')
		v := p[k]
		if v == "" || strings.ContainsAny(v, " \t\r\n\"=[]") || !strconv.CanBackquote(v) {
			v = strconv.Quote(v)
		}
		b.WriteString(v)
	}
	return b.String()
}

// orDash returns s, or "-" when s is empty, so that table cells are never
// blank.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// due is the instance's due time when it matters (WAITING), else "-".
func due(in *pb.Instance) string {
	if in.GetStatus() == pb.InstanceStatus_INSTANCE_STATUS_WAITING {
		return ts(in.GetDueTime())
	}
	return "-"
}

// expiry formats a lease expiry: unset means the lease never expires.
func expiry(t *timestamppb.Timestamp) string {
	if t == nil {
		return "never"
	}
	return ts(t)
}

// printInstanceRow prints the short form of an instance that an action
// returns: where it is now.
func (a *app) printInstanceRow(in *pb.Instance) error {
	t := newTable(a.stdout, "ID", "MACHINE", "NODE", "STATUS", "ATTEMPT", "DUE")
	t.row(in.GetId(), fmt.Sprintf("%s@%d", in.GetMachine(), in.GetVersion()), in.GetNode(),
		statusName(in.GetStatus()), in.GetAttempt(), due(in))
	return t.Flush()
}

// changeLine is the one-line, fixed-layout form of a change used by
// "changes" and "get --history": it can be printed as the change arrives,
// without waiting for a table to align.
func changeLine(c *pb.Change) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6d  %s  %-15s %s@%d", c.GetSeq(), ts(c.GetTime()), changeName(c.GetKind()), c.GetMachine(), c.GetVersion())
	if c.GetInstance() != "" {
		fmt.Fprintf(&b, " %s", c.GetInstance())
	}
	if c.GetDevice() != "" {
		fmt.Fprintf(&b, " device=%s", c.GetDevice())
	}
	if c.GetToNode() != "" {
		if c.GetFromNode() != "" && c.GetFromNode() != c.GetToNode() {
			fmt.Fprintf(&b, " %s -> %s", c.GetFromNode(), c.GetToNode())
		} else {
			fmt.Fprintf(&b, " %s", c.GetToNode())
		}
	}
	if c.GetTransition() != "" {
		fmt.Fprintf(&b, " (%s)", c.GetTransition())
	}
	if c.GetToStatus() != pb.InstanceStatus_INSTANCE_STATUS_UNSPECIFIED {
		fmt.Fprintf(&b, " %s", statusName(c.GetToStatus()))
	}
	if c.GetToStatus() == pb.InstanceStatus_INSTANCE_STATUS_WAITING && c.GetDueTime() != nil {
		fmt.Fprintf(&b, " until %s", ts(c.GetDueTime()))
	}
	if c.GetToken() != 0 {
		fmt.Fprintf(&b, " token=%d", c.GetToken())
	}
	if len(c.GetParams()) > 0 {
		fmt.Fprintf(&b, " [%s]", params(c.GetParams()))
	}
	if c.GetReason() != "" {
		fmt.Fprintf(&b, " reason=%q", c.GetReason())
	}
	if c.GetActor() != "" {
		fmt.Fprintf(&b, " by %s", c.GetActor())
	}
	return b.String()
}
