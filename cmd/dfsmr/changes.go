package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func (a *app) changesCommand() *cobra.Command {
	var (
		from   uint64
		follow bool
		wide   bool
		kinds  []string
		filter = &pb.ChangesRequest{}
	)
	cmd := &cobra.Command{
		Use:   "changes",
		Short: "Print the changelog, or follow it live with -f",
		Long: `Changes prints the changelog: one change per line, in sequence order, each
exactly once.

Without -f it replays from --from (default: the oldest change the server
still keeps; it deletes older ones, see its changelog_retention) through the
last change committed when the command started, then exits. A --from below
the oldest change kept fails and names it. The
server applies --machine, --instance and --device and ends the replay at that head,
even when the last changes do not match the filters; --kind is applied here.

With -f it follows the changelog until interrupted, from --from (default: from
now), and resumes by itself without a gap or a duplicate when the server
restarts or ends the stream because the watcher lagged. It says on stderr
when it cannot connect, when it lost the server, and from which sequence
number it resumed.

A line shows the sequence number, the time, the kind, the machine, the
instance, the nodes, the transition, the status after the change, the
attempt (from the second, and on every lease), when a WAITING instance is due
or a lease expires (with a countdown from now), the token, the params, the
reason and who made the change (the worker's name for work calls). An
operator notice (device_notice) is marked "!" and ends with the command that
acts on it. Lines are cut to 120 columns (--wide: never) and the kind is
coloured on a terminal (see --color). Names are escaped: a control character
shows as \x1b, a bidirectional control as \u202e.`,
		Example: "  dfsmr changes --from 1 -o json | jq .seq\n  dfsmr changes -f --machine report\n  dfsmr changes -f --kind device_notice\n  dfsmr changes -f --device p1",
		Args:    args(cobra.NoArgs),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			want, err := parseKinds(kinds)
			if err != nil {
				return err
			}
			if !follow {
				if !cmd.Flags().Changed("from") {
					from = 1
				}
				if from == 0 {
					return usageErrorf("--from 0 means from now: it needs -f")
				}
			} else {
				a.streamNotes = &followNotes{w: a.stderr, addr: a.addr}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			print := func(ch *pb.Change) error {
				if len(want) > 0 && !want[ch.GetKind()] {
					return nil
				}
				if a.json() {
					return a.printJSON(ch)
				}
				st := a.style()
				st.wide = wide
				_, err := fmt.Fprintln(a.stdout, st.changeLine(ch))
				return err
			}
			// A from beyond head+1 is left to the server: OUT_OF_RANGE.
			req := &pb.ChangesRequest{FromSeq: from, Machine: filter.Machine, Instance: filter.Instance, Device: filter.Device, StopAtHead: !follow}
			printed := false
			printOne := func(ch *pb.Change) error {
				printed = true
				return print(ch)
			}
			err = c.Follow(a.ctx, req, printOne)
			// The default start, the oldest change kept: the server names it
			// when it refuses seq 1. Retention may move it on again
			// before the next call starts, so ask a few times.
			for range 3 {
				oldest, ok := client.OldestKept(err)
				if !ok || printed || cmd.Flags().Changed("from") || follow {
					break
				}
				req.FromSeq = oldest
				err = c.Follow(a.ctx, req, printOne)
			}
			if follow && a.ctx.Err() != nil {
				return nil // interrupted: the normal end of -f
			}
			return err
		}),
	}
	f := cmd.Flags()
	f.Uint64Var(&from, "from", 0, "first sequence number (default: the oldest kept, or from now with -f)")
	f.BoolVarP(&follow, "follow", "f", false, "follow live changes until interrupted")
	f.StringVar(&filter.Machine, "machine", "", "only changes of this machine")
	f.StringVar(&filter.Instance, "instance", "", "only changes of this instance")
	f.StringVar(&filter.Device, "device", "", "only changes of this device: its own and its jobs'")
	f.StringSliceVar(&kinds, "kind", nil, "only changes of these kinds: started, leased, transitioned, device_notice, ... (repeatable, or comma-separated)")
	f.BoolVar(&wide, "wide", false, "never cut lines to 120 columns")
	return cmd
}

// parseKinds turns --kind names ("leased", "device-notice",
// "CHANGE_KIND_TIMED_OUT") into a set; nil for none.
func parseKinds(names []string) (map[pb.ChangeKind]bool, error) {
	if len(names) == 0 {
		return nil, nil
	}
	set := make(map[pb.ChangeKind]bool, len(names))
	for _, n := range names {
		key := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(n), "-", "_"))
		key = strings.TrimPrefix(key, "CHANGE_KIND_")
		v, ok := pb.ChangeKind_value["CHANGE_KIND_"+key]
		if !ok || v == 0 {
			return nil, usageErrorf("--kind %q: want one of %s", n, strings.Join(kindNames(), ", "))
		}
		set[pb.ChangeKind(v)] = true
	}
	return set, nil
}

// kindNames lists the change kinds as --kind takes them, in enum order.
func kindNames() []string {
	var out []int
	for v := range pb.ChangeKind_name {
		if v != 0 {
			out = append(out, int(v))
		}
	}
	slices.Sort(out)
	names := make([]string, len(out))
	for i, v := range out {
		names[i] = changeName(pb.ChangeKind(v))
	}
	return names
}

// followNotes tells on stderr how the streams of "changes -f" fare: that
// it cannot connect, that it lost the server, and from which sequence
// number it resumed. It watches the Changes streams through a client
// interceptor, so that the follow loop itself (client.Follow) stays as it
// is. Each outage is told once, however many retries it takes.
type followNotes struct {
	w    io.Writer
	addr string

	mu       sync.Mutex
	everUp   bool // some stream started
	down     bool // an outage was told and no stream started since
	lagged   bool // the server ended the last stream because we lagged
	lastFrom uint64
}

// interceptor returns the stream interceptor that feeds n.
func (n *followNotes) interceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if method != pb.ChangesService_Changes_FullMethodName {
			return cs, err
		}
		if err != nil {
			n.ended(ctx, err, false)
			return nil, err
		}
		return &notedStream{ClientStream: cs, n: n, ctx: ctx}, nil
	}
}

// started records a stream whose server sent its headers: it is
// registered, and reads from from.
func (n *followNotes) started(from uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.down && !n.everUp && from == 0:
		fmt.Fprintf(n.w, "dfsmr: connected to %s; following from now\n", clean(n.addr))
	case n.down && !n.everUp:
		fmt.Fprintf(n.w, "dfsmr: connected to %s; following from seq %d\n", clean(n.addr), from)
	case n.down:
		fmt.Fprintf(n.w, "dfsmr: connected to %s again; resuming from seq %d\n", clean(n.addr), from)
	case n.lagged:
		fmt.Fprintf(n.w, "dfsmr: resuming from seq %d\n", from)
	}
	n.everUp, n.down, n.lagged = true, false, false
}

// ended records the end of a stream (or its failure to start); wasUp
// says the stream had started.
func (n *followNotes) ended(ctx context.Context, err error, wasUp bool) {
	if ctx.Err() != nil || errors.Is(err, io.EOF) {
		return
	}
	st := status.Convert(err)
	n.mu.Lock()
	defer n.mu.Unlock()
	switch st.Code() {
	case codes.Aborted:
		n.lagged = true
		fmt.Fprintf(n.w, "dfsmr: the server ended the stream: %s\n", indentLines(st.Message()))
	case codes.Unavailable:
		if n.down {
			return
		}
		n.down = true
		if n.everUp || wasUp {
			fmt.Fprintf(n.w, "dfsmr: lost the server at %s (%s); reconnecting\n", clean(n.addr), indentLines(st.Message()))
		} else {
			fmt.Fprintf(n.w, "dfsmr: cannot connect to %s (%s); retrying\n", clean(n.addr), indentLines(st.Message()))
		}
	}
}

// notedStream is a Changes stream that reports to its followNotes.
type notedStream struct {
	grpc.ClientStream
	n    *followNotes
	ctx  context.Context
	from uint64
	up   bool
}

func (s *notedStream) SendMsg(m any) error {
	if r, ok := m.(*pb.ChangesRequest); ok {
		s.from = r.GetFromSeq()
	}
	return s.ClientStream.SendMsg(m)
}

// CloseSend ends the request and waits for the server's headers, which
// it sends once the stream is registered (with the head): only then is the
// stream known to work.
func (s *notedStream) CloseSend() error {
	err := s.ClientStream.CloseSend()
	if md, herr := s.ClientStream.Header(); herr == nil && len(md.Get(client.HeadSeqHeader)) > 0 {
		s.up = true
		s.n.started(s.from)
	}
	return err
}

func (s *notedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.n.ended(s.ctx, err, s.up)
	}
	return err
}
