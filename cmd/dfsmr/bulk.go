package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
)

// bulkFlags are the flags of cancel and retry that select many instances.
type bulkFlags struct {
	machine, node, status string
	all, dryRun, yes      bool
	reason                string
}

func (f *bulkFlags) add(cmd *cobra.Command, withStatus bool, nodeUsage, allUsage string) {
	fl := cmd.Flags()
	fl.StringVar(&f.machine, "machine", "", "act on the instances of this machine instead of one ID")
	fl.StringVar(&f.node, "node", "", nodeUsage+" (needs --machine)")
	if withStatus {
		fl.StringVar(&f.status, "status", "", "only instances with this status: waiting, ready, leased or held")
	}
	fl.BoolVar(&f.all, "all", false, allUsage)
	fl.BoolVar(&f.dryRun, "dry-run", false, "count the matching instances and change nothing")
	fl.BoolVar(&f.yes, "yes", false, "do not ask for confirmation")
	fl.StringVar(&f.reason, "reason", "", "why, recorded in the changelog")
}

// selecting reports whether any flag selects instances by filter.
func (f *bulkFlags) selecting() bool {
	return f.machine != "" || f.node != "" || f.status != "" || f.all || f.dryRun || f.yes
}

// bulkResponse is what CancelInstancesResponse and RetryInstancesResponse
// both say.
type bulkResponse interface {
	proto.Message
	GetMatched() uint32
	GetChanged() uint32
	GetSkipped() uint32
	GetSampleIds() []string
}

// bulk runs a bulk action: a dry run counts the matching instances; unless
// that was all the caller asked for, the count is confirmed (--yes, or a
// "y" on a terminal) and sent as expected_count with the real call, so
// that it acts on the instances counted or on none.
func (a *app) bulk(f *bulkFlags, verb, past string, call func(c *client.Client, dryRun bool, expected *uint32) (bulkResponse, error)) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	dry, err := call(c, true, nil)
	if err != nil {
		return err
	}
	n := dry.GetMatched()
	if f.dryRun || n == 0 {
		if a.json() {
			return a.printJSON(dry)
		}
		fmt.Fprintf(a.stdout, "%d instances match; nothing was changed\n", n)
		a.printSample(dry)
		return nil
	}
	if !f.yes {
		if !interactive(a.stdin) {
			return usageErrorf("%d instances match: add --yes to %s them (stdin is not a terminal to confirm on), or --dry-run to list them", n, verb)
		}
		fmt.Fprintf(a.stderr, "%d instances match:\n", n)
		a.printSampleTo(a.stderr, dry)
		fmt.Fprintf(a.stderr, "%s these %d instances? [y/N] ", strings.ToUpper(verb[:1])+verb[1:], n)
		answer, _ := bufio.NewReader(a.stdin).ReadString('\n')
		if ans := strings.ToLower(strings.TrimSpace(answer)); ans != "y" && ans != "yes" {
			return &codeError{code: exitFailed, msg: "not confirmed: nothing was changed"}
		}
	}
	res, err := call(c, false, &n)
	if err != nil {
		return err
	}
	if a.json() {
		return a.printJSON(res)
	}
	fmt.Fprintf(a.stdout, "%s %d of %d matching instances", past, res.GetChanged(), res.GetMatched())
	if s := res.GetSkipped(); s > 0 {
		fmt.Fprintf(a.stdout, "; %d skipped: they changed meanwhile", s)
	}
	fmt.Fprintln(a.stdout)
	return nil
}

func (a *app) printSample(r bulkResponse) { a.printSampleTo(a.stdout, r) }

func (a *app) printSampleTo(w io.Writer, r bulkResponse) {
	ids := r.GetSampleIds()
	for _, id := range ids {
		fmt.Fprintf(w, "  %s\n", clean(id))
	}
	if more := int(r.GetMatched()) - len(ids); more > 0 {
		fmt.Fprintf(w, "  ... and %d more\n", more)
	}
}

// interactive reports whether r is a terminal a person can answer a
// confirmation on. A reader that says itself whether it is one (a test's
// stand-in for a terminal) is believed.
func interactive(r io.Reader) bool {
	if t, ok := r.(interface{ IsTerminal() bool }); ok {
		return t.IsTerminal()
	}
	return isTerminal(r)
}

func (a *app) cancelCommand() *cobra.Command {
	var f bulkFlags
	cmd := &cobra.Command{
		Use:   "cancel [ID]",
		Short: "Cancel an instance, or all a filter selects (they end in dfsmr.aborted)",
		Example: `  dfsmr cancel r-1 --reason "customer cancelled"
  dfsmr cancel --machine report --node uploadable --status waiting --dry-run
  dfsmr cancel --machine report --status waiting --yes`,
		Long: `Cancel ID ends one instance in dfsmr.aborted.

With --machine (and optionally --node and --status), or --status alone, or
--all, cancel acts on every instance that is not FINAL and matches: it first
counts them, prints the count and the first ids, and asks for confirmation
on a terminal. --yes skips the question; without a terminal --yes is
required. --dry-run only counts. The confirmed count is sent with the
cancel: if another number of instances matches by then, nothing is
cancelled (FAILED_PRECONDITION) and you count again.`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: runE(func(_ *cobra.Command, ids []string) error {
			if len(ids) == 1 {
				if f.selecting() {
					return usageErrorf("give an ID or filter flags, not both")
				}
				req := &pb.CancelInstanceRequest{Id: ids[0], Reason: f.reason}
				return unary(a, func(c *client.Client) (*pb.CancelInstanceResponse, error) {
					return c.Instances.CancelInstance(a.ctx, req)
				}, func(resp *pb.CancelInstanceResponse) error {
					return a.printInstanceRow(resp.GetInstance())
				})
			}
			if !f.selecting() {
				return usageErrorf("give an ID, or --machine, --status or --all to cancel many")
			}
			status, err := parseStatus(f.status)
			if err != nil {
				return err
			}
			return a.bulk(&f, "cancel", "cancelled", func(c *client.Client, dryRun bool, expected *uint32) (bulkResponse, error) {
				return c.Instances.CancelInstances(a.ctx, &pb.CancelInstancesRequest{Machine: f.machine, Node: f.node, Status: status,
					All: f.all, DryRun: dryRun, ExpectedCount: expected, Reason: f.reason})
			})
		}),
	}
	f.add(cmd, true, "only instances in this node", "act with no filter: every instance that is not FINAL")
	return cmd
}

func (a *app) retryCommand() *cobra.Command {
	var f bulkFlags
	cmd := &cobra.Command{
		Use:   "retry [ID]",
		Short: "Run a failed instance again from the node it failed in, or all a filter selects",
		Example: `  dfsmr retry r-7 --reason "mirror back up"
  dfsmr retry --machine report --node uploadable --dry-run
  dfsmr retry --machine report --yes`,
		Long: `Retry ID takes an instance that ended in dfsmr.failed (its node's attempts
used up) back to the node it failed in, READY there with attempt 1. Any other
instance, cancelled ones included, is refused (FAILED_PRECONDITION).

With --machine (and optionally --node, the node they failed in), or --all,
retry acts on every failed instance that matches, counted and confirmed as
cancel does: --dry-run only counts, --yes skips the question.`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: runE(func(_ *cobra.Command, ids []string) error {
			if len(ids) == 1 {
				if f.selecting() {
					return usageErrorf("give an ID or filter flags, not both")
				}
				req := &pb.RetryInstanceRequest{Id: ids[0], Reason: f.reason}
				return unary(a, func(c *client.Client) (*pb.RetryInstanceResponse, error) {
					return c.Instances.RetryInstance(a.ctx, req)
				}, func(resp *pb.RetryInstanceResponse) error {
					return a.printInstanceRow(resp.GetInstance())
				})
			}
			if !f.selecting() {
				return usageErrorf("give an ID, or --machine or --all to retry many")
			}
			return a.bulk(&f, "retry", "retried", func(c *client.Client, dryRun bool, expected *uint32) (bulkResponse, error) {
				return c.Instances.RetryInstances(a.ctx, &pb.RetryInstancesRequest{Machine: f.machine, Node: f.node,
					All: f.all, DryRun: dryRun, ExpectedCount: expected, Reason: f.reason})
			})
		}),
	}
	f.add(cmd, false, "only instances that failed in this node", "act with no filter: every failed instance of every machine")
	return cmd
}
