package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/machines"
	"github.com/spf13/cobra"
)

func (a *app) defineCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "define FILE...",
		Short: "Define machines from YAML files (- reads stdin)",
		Long: `Define sends each YAML definition to the server, in order, and prints the
machine id, the version that holds the content, and whether this call created
it or the same content already existed (unchanged). It stops at the first file
that fails; the files before it stay defined.`,
		Example: "  dfsmr define machines/report.yaml\n  cat report.yaml | dfsmr define -",
		Args:    args(cobra.MinimumNArgs(1)),
		RunE: runE(func(_ *cobra.Command, files []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			// The table is printed at the end, or before the error of a
			// later file, and only if some file was defined.
			t := newTable(a.stdout, "ID", "VERSION", "RESULT", "FILE")
			rows := 0
			defer func() {
				if rows > 0 {
					t.Flush()
				}
			}()
			for _, f := range files {
				src, name, err := a.readFile(f)
				if err != nil {
					return err
				}
				resp, err := c.Machines.DefineMachine(a.ctx, &pb.DefineMachineRequest{Source: string(src), FileName: name})
				if err != nil {
					return err
				}
				if a.json() {
					if err := a.printJSON(resp); err != nil {
						return err
					}
					continue
				}
				result := "unchanged"
				if resp.GetCreated() {
					result = "created"
				}
				t.row(resp.GetMachine().GetId(), resp.GetMachine().GetVersion(), result, name)
				rows++
			}
			return nil
		}),
	}
}

// readFile reads a file, or stdin for "-". It returns the name to show in
// error positions.
func (a *app) readFile(f string) ([]byte, string, error) {
	if f == "-" {
		b, err := io.ReadAll(a.stdin)
		return b, "<stdin>", err
	}
	b, err := os.ReadFile(f)
	return b, f, err
}

func (a *app) machinesCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "machines",
		Short: "List machines (latest version of each)",
		Args:  args(cobra.NoArgs),
		RunE: runE(func(*cobra.Command, []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ms, err := c.ListAllMachines(a.ctx, 0)
			if err != nil {
				return err
			}
			if a.json() {
				for _, m := range ms {
					if err := a.printJSON(m); err != nil {
						return err
					}
				}
				return nil
			}
			t := newTable(a.stdout, "ID", "VERSION", "KIND", "NODES", "DEFINED")
			for _, m := range ms {
				t.row(m.GetId(), m.GetVersion(), kindName(m.GetKind()), len(m.GetNodes()), ts(m.GetDefineTime()))
			}
			return t.Flush()
		}),
	}
}

func (a *app) machineCommand() *cobra.Command {
	var version uint32
	cmd := &cobra.Command{
		Use:   "machine ID",
		Short: "Show a machine version: nodes, timeouts, retries, transitions",
		Args:  args(cobra.ExactArgs(1)),
		RunE: runE(func(_ *cobra.Command, ids []string) error {
			return unary(a, func(c *client.Client) (*pb.GetMachineResponse, error) {
				return c.Machines.GetMachine(a.ctx, &pb.GetMachineRequest{Id: ids[0], Version: version})
			}, a.printMachine)
		}),
	}
	cmd.Flags().Uint32Var(&version, "version", 0, "version to show (default: the latest)")
	return cmd
}

func (a *app) printMachine(resp *pb.GetMachineResponse) error {
	m := resp.GetMachine()
	versions := make([]string, len(resp.GetVersions()))
	for i, v := range resp.GetVersions() {
		versions[i] = strconv.FormatUint(uint64(v), 10)
	}
	t := newTable(a.stdout)
	t.row("ID:", m.GetId())
	t.row("VERSION:", m.GetVersion())
	t.row("VERSIONS:", strings.Join(versions, ", "))
	t.row("KIND:", kindName(m.GetKind()))
	t.row("UPGRADE:", upgradeName(m.GetUpgradeStrategy()))
	t.row("START:", m.GetStartNode())
	t.row("DEFINED:", ts(m.GetDefineTime()))
	t.row("FINGERPRINT:", m.GetFingerprint())
	t.row("DESCRIPTION:", orDash(m.GetDescription()))
	t.row("BREAKER:", breakerText(resp.GetBreaker()))
	if err := t.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(a.stdout)
	t = newTable(a.stdout, "NODE", "START", "FINAL", "TIMEOUT", "RETRY")
	for _, n := range m.GetNodes() {
		t.row(n.GetName(), yes(n.GetStart()), yes(n.GetFinal()), timeoutText(n), retryText(n))
	}
	if err := t.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(a.stdout)
	t = newTable(a.stdout, "NODE", "TRANSITION", "TO", "DELAY", "SIGNAL")
	for _, n := range m.GetNodes() {
		for _, tr := range n.GetTransitions() {
			t.row(n.GetName(), tr.GetName(), tr.GetTo(), dur(tr.GetDelay()), yes(tr.GetSignal()))
		}
	}
	return t.Flush()
}

// breakerText describes a machine's circuit breaker: state, failure share
// of the window and the extra retry delay, e.g.
// "open, 60% of 20 attempts failed, retries +30s since 2025-...".
func breakerText(b *pb.Breaker) string {
	if b == nil {
		return "-"
	}
	s := fmt.Sprintf("%s, %.0f%% of %d attempts failed", breakerName(b.GetState()), 100*b.GetFailureShare(), b.GetWindow())
	if d := b.GetExtraDelay().AsDuration(); d > 0 {
		s += ", retries +" + machines.FormatDuration(d)
	}
	if b.GetOpenTime() != nil {
		s += " since " + ts(b.GetOpenTime())
	}
	return s
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "-"
}

// timeoutText describes a node's lease timeout.
func timeoutText(n *pb.Node) string {
	to := n.GetTimeout()
	if n.GetFinal() {
		return "-"
	}
	if p := to.GetPercentile(); p > 0 {
		max := "no max"
		if to.GetMax().AsDuration() > 0 {
			max = machines.FormatDuration(to.GetMax().AsDuration())
		}
		return fmt.Sprintf("p%g of recent, %s..%s", p, machines.FormatDuration(to.GetMin().AsDuration()), max)
	}
	if d := to.GetFixed().AsDuration(); d > 0 {
		return machines.FormatDuration(d)
	}
	return "never (at most once)"
}

// retryText describes a node's retry policy.
func retryText(n *pb.Node) string {
	r := n.GetRetry()
	if n.GetFinal() {
		return "-"
	}
	if r == nil {
		return "at once, unlimited"
	}
	attempts := "unlimited attempts"
	if r.GetMaxAttempts() > 0 {
		attempts = fmt.Sprintf("%d attempts", r.GetMaxAttempts())
	}
	b := backoffName(r.GetBackoff())
	if r.GetBackoff() == pb.Backoff_BACKOFF_UNSPECIFIED {
		b = "fixed"
	}
	s := fmt.Sprintf("%s, %s %s", attempts, b, machines.FormatDuration(r.GetInitial().AsDuration()))
	if r.GetMax().AsDuration() > 0 {
		s += ".." + machines.FormatDuration(r.GetMax().AsDuration())
	}
	if r.GetJitter() > 0 {
		s += fmt.Sprintf(", jitter %g", r.GetJitter())
	}
	return s
}

// Graph formats.
const (
	formatDOT     = "dot"
	formatMermaid = "mermaid"
)

func (a *app) graphCommand() *cobra.Command {
	var (
		format  string
		version uint32
		file    string
	)
	cmd := &cobra.Command{
		Use:   "graph [MACHINE]",
		Short: "Draw a machine as Graphviz DOT or Mermaid",
		Long: `Graph prints a machine as a Graphviz digraph (--format dot, the default) or
a Mermaid state diagram (--format mermaid). It fetches the machine's source
from the server and draws it locally; with --file it works offline from a
YAML definition instead (- reads stdin), which also checks the definition.
With -o json it prints one object: machine, version, format and graph (the
text).`,
		Example: "  dfsmr graph report | dot -Tsvg > report.svg\n  dfsmr graph --file machines/report.yaml --format mermaid",
		Args: args(func(cmd *cobra.Command, args []string) error {
			if file != "" {
				if len(args) != 0 {
					return fmt.Errorf("graph takes a MACHINE or --file, not both")
				}
				return nil
			}
			return cobra.ExactArgs(1)(cmd, args)
		}),
		RunE: runE(func(_ *cobra.Command, ids []string) error {
			if format != formatDOT && format != formatMermaid {
				return usageErrorf("--format must be %s or %s, not %q", formatDOT, formatMermaid, format)
			}
			var src []byte
			var name string
			if file != "" {
				var err error
				if src, name, err = a.readFile(file); err != nil {
					return err
				}
			} else {
				c, err := a.client()
				if err != nil {
					return err
				}
				resp, err := c.Machines.GetMachine(a.ctx, &pb.GetMachineRequest{Id: ids[0], Version: version})
				if err != nil {
					return err
				}
				m := resp.GetMachine()
				src, name = []byte(m.GetSource()), fmt.Sprintf("%s@%d", m.GetId(), m.GetVersion())
			}
			m, err := machines.Compile(name, src)
			if err != nil {
				if verrs := machines.AsValidationErrors(err); len(verrs) > 0 {
					return fmt.Errorf("invalid definition:\n%w", err)
				}
				return err
			}
			out := machines.DOT(m)
			if format == formatMermaid {
				out = machines.Mermaid(m)
			}
			if a.json() {
				return a.printValue(map[string]any{"machine": m.ID, "version": m.Version, "format": format, "graph": out})
			}
			_, err = io.WriteString(a.stdout, out)
			return err
		}),
	}
	f := cmd.Flags()
	f.StringVar(&format, "format", formatDOT, "graph format: dot or mermaid")
	f.Uint32Var(&version, "version", 0, "machine version (default: the latest)")
	f.StringVar(&file, "file", "", "draw this YAML definition instead of asking the server (- reads stdin)")
	cmd.MarkFlagsMutuallyExclusive("file", "version")
	return cmd
}
