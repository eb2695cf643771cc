package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
)

// defaultWorker names this process as a worker: hostname/pid.
func defaultWorker() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}

func parseToken(s string) (uint64, error) {
	tok, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, usageErrorf("TOKEN %q: want the lease's token, a number", s)
	}
	return tok, nil
}

func (a *app) readyCommand() *cobra.Command {
	var (
		req  = &pb.ReadyRequest{}
		wait time.Duration
	)
	cmd := &cobra.Command{
		Use:   "ready",
		Short: "Lease the next READY instance (exit code 3 when there is no work)",
		Long: `Ready leases the next READY instance matching the filters (highest priority
first, then earliest due, then id) and prints its id, node, lease token and
lease expiry. With --wait it waits up to that long for work to appear.

When no work is available it prints nothing on stdout and exits with code 3.`,
		Example: "  dfsmr ready --machine report --wait 30s -o json",
		Args:    args(cobra.NoArgs),
		RunE: runE(func(*cobra.Command, []string) error {
			if wait < 0 {
				return usageErrorf("--wait must not be negative")
			}
			if wait > 0 {
				req.Wait = durationpb.New(wait)
			}
			return unary(a, func(c *client.Client) (*pb.ReadyResponse, error) {
				resp, err := c.Work.Ready(a.ctx, req)
				if err == nil && resp.GetLease() == nil {
					err = &codeError{code: exitNoWork, msg: "no work available"}
				}
				return resp, err
			}, func(resp *pb.ReadyResponse) error {
				in := resp.GetInstance()
				t := newTable(a.stdout, "ID", "MACHINE", "NODE", "TOKEN", "EXPIRES", "ATTEMPT", "PARAMS")
				t.row(in.GetId(), fmt.Sprintf("%s@%d", in.GetMachine(), in.GetVersion()), in.GetNode(),
					resp.GetLease().GetToken(), expiry(resp.GetLease().GetExpireTime()), in.GetAttempt(), params(in.GetParams()))
				return t.Flush()
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Machine, "machine", "", "only instances of this machine")
	f.StringVar(&req.Node, "node", "", "only instances in this node")
	f.StringVar(&req.Worker, "worker", defaultWorker(), "worker name recorded in the lease")
	f.DurationVar(&wait, "wait", 0, "wait up to this long for work (at most 5m)")
	return cmd
}

func (a *app) transitionCommand() *cobra.Command {
	var (
		req   = &pb.TransitionRequest{}
		kvs   []string
		delay time.Duration
	)
	cmd := &cobra.Command{
		Use:   "transition ID TOKEN NAME",
		Short: "Report the outcome of leased work: take transition NAME",
		Long: `Transition reports that the leased work on instance ID is done and which
transition NAME of its current node happened, presenting the lease's TOKEN.
A stale token is ABORTED; a transition the node does not have is
FAILED_PRECONDITION.`,
		Example: "  dfsmr transition item-42 7 ok --param file=/data/42\n  dfsmr transition item-42 7 throttled --delay 2m",
		Args:    args(cobra.ExactArgs(3)),
		RunE: runE(func(cmd *cobra.Command, argv []string) error {
			req.Id, req.Transition = argv[0], argv[2]
			var err error
			if req.Token, err = parseToken(argv[1]); err != nil {
				return err
			}
			if req.Params, err = parseParams(kvs); err != nil {
				return err
			}
			if cmd.Flags().Changed("delay") {
				req.Delay = durationpb.New(delay)
			}
			return unary(a, func(c *client.Client) (*pb.TransitionResponse, error) {
				return c.Work.Transition(a.ctx, req)
			}, func(resp *pb.TransitionResponse) error {
				return a.printInstanceRow(resp.GetInstance())
			})
		}),
	}
	f := cmd.Flags()
	f.StringArrayVar(&kvs, "param", nil, paramUsage)
	f.StringVar(&req.RequestId, "request-id", "", "makes a retry of this call safe")
	f.DurationVar(&delay, "delay", 0, "wait this long before the target node is offered (overrides the definition; 0: no delay)")
	return cmd
}

func (a *app) heartbeatCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "heartbeat ID TOKEN",
		Short: "Extend a lease by the node's timeout",
		Args:  args(cobra.ExactArgs(2)),
		RunE: runE(func(_ *cobra.Command, argv []string) error {
			tok, err := parseToken(argv[1])
			if err != nil {
				return err
			}
			return unary(a, func(c *client.Client) (*pb.HeartbeatResponse, error) {
				return c.Work.Heartbeat(a.ctx, &pb.HeartbeatRequest{Id: argv[0], Token: tok})
			}, func(resp *pb.HeartbeatResponse) error {
				t := newTable(a.stdout, "ID", "TOKEN", "EXPIRES")
				t.row(argv[0], tok, expiry(resp.GetExpireTime()))
				return t.Flush()
			})
		}),
	}
}

func (a *app) relinquishCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "relinquish ID TOKEN",
		Short: "Give a lease back: the instance is READY again, the attempt not counted",
		Args:  args(cobra.ExactArgs(2)),
		RunE: runE(func(_ *cobra.Command, argv []string) error {
			tok, err := parseToken(argv[1])
			if err != nil {
				return err
			}
			return unary(a, func(c *client.Client) (*pb.RelinquishResponse, error) {
				return c.Work.Relinquish(a.ctx, &pb.RelinquishRequest{Id: argv[0], Token: tok})
			}, func(resp *pb.RelinquishResponse) error {
				return a.printInstanceRow(resp.GetInstance())
			})
		}),
	}
}
