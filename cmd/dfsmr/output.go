package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dfsmr/dfsmr/machines"

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

// row prints one row; every cell is escaped (clean), so that a name with
// a tab or an ESC sequence can neither break the columns nor the terminal.
func (t table) row(cells ...any) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(t, "\t")
		}
		io.WriteString(t, clean(fmt.Sprint(c)))
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

// lineWidth is the most columns a change line takes (unless --wide): the
// params and the reason, then the notice text, give way first.
const lineWidth = 120

// lineStyle is how change lines are printed: colour, the time that
// countdowns count from, and whether long lines are cut to lineWidth.
type lineStyle struct {
	color bool
	now   time.Time
	wide  bool
}

// ANSI SGR sequences of the colours of change kinds.
const (
	sgrReset  = "\x1b[0m"
	sgrRed    = "\x1b[31m"
	sgrGreen  = "\x1b[32m"
	sgrYellow = "\x1b[1;33m"
	sgrCyan   = "\x1b[36m"
	sgrDim    = "\x1b[2m"
)

// kindColor is the colour of a change kind's column: red for what went
// wrong, bold yellow for what an operator must do, green for a finish.
func kindColor(c *pb.Change) string {
	switch c.GetKind() {
	case pb.ChangeKind_CHANGE_KIND_FAILED, pb.ChangeKind_CHANGE_KIND_TIMED_OUT, pb.ChangeKind_CHANGE_KIND_ABORTED,
		pb.ChangeKind_CHANGE_KIND_BREAKER_OPENED, pb.ChangeKind_CHANGE_KIND_DEVICE_REJECTED:
		return sgrRed
	case pb.ChangeKind_CHANGE_KIND_DEVICE_NOTICE:
		return sgrYellow
	case pb.ChangeKind_CHANGE_KIND_LEASED:
		return sgrCyan
	case pb.ChangeKind_CHANGE_KIND_HEARTBEAT, pb.ChangeKind_CHANGE_KIND_DEVICE_MOVED:
		return sgrDim
	}
	if c.GetToStatus() == pb.InstanceStatus_INSTANCE_STATUS_FINAL {
		return sgrGreen
	}
	return ""
}

// noticeSignal finds the signal a notice asks for ("... then signal
// retrieved").
var noticeSignal = regexp.MustCompile(`\bsignal (the printer )?([A-Za-z0-9_.-]+)\s*$`)

// noticeCommand is the command an operator runs to act on a notice:
// "dfsmr retrieved JOB" for the print job signals that have their own
// command, "dfsmr signal JOB NAME" for another, "dfsmr cleared PRINTER"
// for "signal the printer cleared"; "" when the notice names no signal.
func noticeCommand(c *pb.Change) string {
	m := noticeSignal.FindStringSubmatch(c.GetReason())
	switch {
	case m == nil:
		return ""
	case m[1] != "":
		if m[2] != signalCleared || c.GetDevice() == "" {
			return ""
		}
		return fmt.Sprintf("dfsmr %s %s", signalCleared, c.GetDevice())
	case c.GetInstance() == "":
		return ""
	}
	switch m[2] {
	case signalRetrieved, signalRecovered:
		return fmt.Sprintf("dfsmr %s %s", m[2], c.GetInstance())
	}
	return fmt.Sprintf("dfsmr signal %s %s", c.GetInstance(), m[2])
}

// when formats a due time or lease expiry with its countdown from now:
// "21:40:05Z (in 4m59s)", "... (2s ago)"; the date is left out when it is
// the change's own. compact: the countdown alone, "in 4m59s".
func (st lineStyle) when(t, changed *timestamppb.Timestamp, compact bool) string {
	at := t.AsTime().UTC()
	d := at.Sub(st.now).Round(time.Second)
	if compact {
		switch {
		case d > 0:
			return "in " + machines.FormatDuration(d)
		case d < 0:
			return machines.FormatDuration(-d) + " ago"
		}
		return "now"
	}
	s := at.Format(time.RFC3339)
	if changed != nil && changed.AsTime().UTC().Format(time.DateOnly) == at.Format(time.DateOnly) {
		s = at.Format("15:04:05Z")
	}
	switch {
	case d > 0:
		return fmt.Sprintf("%s (in %s)", s, machines.FormatDuration(d))
	case d < 0:
		return fmt.Sprintf("%s (%s ago)", s, machines.FormatDuration(-d))
	}
	return s + " (now)"
}

// isAddr reports whether s is a peer address (host:port), which is how the
// server names a caller without authentication.
func isAddr(s string) bool {
	host, port, err := net.SplitHostPort(s)
	return err == nil && port != "" && net.ParseIP(host) != nil
}

// changeLine is the one-line, fixed-layout form of a change used by
// "changes" and "get --history": it can be printed as the change arrives,
// without waiting for a table to align. Every name and value in it is
// escaped (clean). A DEVICE_NOTICE is marked "! notice" and shows the
// printer, the job and the command that acts on it before the notice's
// words. Unless st.wide, the line is cut to lineWidth columns.
func (st lineStyle) changeLine(c *pb.Change) string {
	kind := changeName(c.GetKind())
	notice := c.GetKind() == pb.ChangeKind_CHANGE_KIND_DEVICE_NOTICE
	if notice {
		kind = "! notice"
	}
	head := fmt.Sprintf("%6d  %s  ", c.GetSeq(), ts(c.GetTime()))

	// fixed is shown first; flex gives way when the line is too long.
	var fixed, flex string
	if notice {
		// What the operator must know first: the printer, the job, the
		// command; the notice's own words after them.
		fixed = clean(strings.TrimSpace(c.GetDevice() + " " + c.GetInstance()))
		if cmd := noticeCommand(c); cmd != "" {
			fixed += " -> " + clean(cmd)
		}
		flex = ": " + clean(c.GetReason())
	} else {
		fixed = clean(st.changeFields(c, false))
		if len(c.GetParams()) > 0 {
			flex += " [" + clean(params(c.GetParams())) + "]"
		}
		if c.GetReason() != "" {
			flex += " reason=" + strconv.Quote(c.GetReason())
		}
	}
	kindCol := fmt.Sprintf("%-15s ", kind)
	tail := fixed + flex
	if !st.wide {
		room := lineWidth - utf8.RuneCountInString(head) - utf8.RuneCountInString(kindCol)
		if !notice && utf8.RuneCountInString(fixed) > room-2 {
			// Long ids: the due time gives way to its countdown.
			fixed = clean(st.changeFields(c, true))
			tail = fixed + flex
		}
		if utf8.RuneCountInString(tail) > room {
			if keep := room - utf8.RuneCountInString(fixed); keep >= 2 {
				tail = fixed + truncate(flex, keep)
			} else {
				tail = truncate(tail, room)
			}
		}
	}
	if st.color {
		if col := kindColor(c); col != "" {
			kindCol = col + kind + sgrReset + kindCol[len(kind):]
		}
	}
	return head + kindCol + tail
}

// changeFields is the part of a change's line that is always shown (cut
// at the end only when it does not fit): machine, instance, device, nodes,
// transition, status (unless the kind says it: leased, heartbeat), who made
// the change, attempt, due time or lease expiry, token.
// compact shows the due time as its countdown only.
func (st lineStyle) changeFields(c *pb.Change, compact bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s@%d", c.GetMachine(), c.GetVersion())
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
	implied := c.GetToStatus() == pb.InstanceStatus_INSTANCE_STATUS_LEASED &&
		(c.GetKind() == pb.ChangeKind_CHANGE_KIND_LEASED || c.GetKind() == pb.ChangeKind_CHANGE_KIND_HEARTBEAT)
	if c.GetToStatus() != pb.InstanceStatus_INSTANCE_STATUS_UNSPECIFIED && !implied {
		fmt.Fprintf(&b, " %s", statusName(c.GetToStatus()))
	}
	if by := who(c); by != "" {
		fmt.Fprintf(&b, " by %s", by)
	}
	if a := c.GetAttempt(); a >= 2 || (a >= 1 && c.GetKind() == pb.ChangeKind_CHANGE_KIND_LEASED) {
		fmt.Fprintf(&b, " attempt %d", a)
	}
	if c.GetDueTime() != nil {
		switch c.GetToStatus() {
		case pb.InstanceStatus_INSTANCE_STATUS_WAITING:
			fmt.Fprintf(&b, " until %s", st.when(c.GetDueTime(), c.GetTime(), compact))
		case pb.InstanceStatus_INSTANCE_STATUS_LEASED:
			fmt.Fprintf(&b, " expires %s", st.when(c.GetDueTime(), c.GetTime(), compact))
		}
	}
	if c.GetToken() != 0 {
		fmt.Fprintf(&b, " token=%d", c.GetToken())
	}
	return b.String()
}

// who names whoever made a change: the worker name of a work call (with
// the authenticated principal beside it when that differs), else the
// actor; nothing for a device's own round, which "device=" already names,
// nor for a caller known only by its address and port.
func who(c *pb.Change) string {
	actor, worker := c.GetActor(), c.GetWorker()
	if c.GetDevice() != "" && actor == "device:"+c.GetDevice() {
		return ""
	}
	if isAddr(actor) {
		// An unauthenticated caller's ephemeral port says nothing.
		actor = ""
	}
	if worker == "" {
		return actor
	}
	if actor == "" || actor == worker {
		return worker
	}
	return fmt.Sprintf("%s (%s)", worker, actor)
}

// truncate cuts s to at most n runes, marking the cut with "…".
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n < 1 {
		return ""
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// clean makes s safe to print on a terminal: control characters (Unicode
// Cc, ESC among them), bidirectional controls and invalid UTF-8 become
// visible Go-style escapes (\x1b, \u202e), so that a name or a message
// chosen by someone else cannot move the cursor, recolour or reorder what
// an operator sees. Every table cell and error line of the CLI goes
// through it; JSON output is escaped by its encoding.
func clean(s string) string {
	ok := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.Is(unicode.Cc, r) || machines.IsBidiControl(r) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x100 && unicode.Is(unicode.Cc, r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.Is(unicode.Cc, r) || machines.IsBidiControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// cleanLines is clean for a message of several lines: each line is
// escaped, the line breaks stay.
func cleanLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = clean(l)
	}
	return strings.Join(lines, "\n")
}

// printValue writes v as one line of JSON whose object keys are
// lowerCamelCase, as protojson names proto fields, so that every -o json
// output of the CLI, proto message or not, names its fields the same way:
// "headSeq", "stepsPerS", "deviceCalls".
func (a *app) printValue(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var tree any
	if err := json.Unmarshal(b, &tree); err != nil {
		return err
	}
	if b, err = json.Marshal(camelKeys(tree)); err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = a.stdout.Write(b)
	return err
}

// camelKeys renames the object keys in a decoded JSON value to
// lowerCamelCase.
func camelKeys(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[lowerCamel(k)] = camelKeys(e)
		}
		return out
	case []any:
		for i, e := range v {
			v[i] = camelKeys(e)
		}
	}
	return v
}

// lowerCamel turns "steps_per_s" into "stepsPerS", "DeviceCalls" into
// "deviceCalls" and "APIStats" into "apiStats".
func lowerCamel(k string) string {
	if strings.Contains(k, "_") {
		parts := strings.Split(k, "_")
		for i := 1; i < len(parts); i++ {
			if parts[i] != "" {
				parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
			}
		}
		return strings.Join(parts, "")
	}
	r := []rune(k)
	n := 0
	for n < len(r) && unicode.IsUpper(r[n]) {
		n++
	}
	if n > 1 && n < len(r) && unicode.IsLower(r[n]) {
		n-- // "APIStats": the S starts the next word
	}
	for i := range n {
		r[i] = unicode.ToLower(r[i])
	}
	return string(r)
}
