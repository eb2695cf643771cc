package main

import (
	"errors"
	"fmt"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/spf13/cobra"
)

// errReachedHead ends a replay once the head known at the start is printed.
var errReachedHead = errors.New("reached the head")

func (a *app) changesCommand() *cobra.Command {
	var (
		from   uint64
		follow bool
		filter = &pb.ChangesRequest{}
	)
	cmd := &cobra.Command{
		Use:   "changes",
		Short: "Print the changelog, or follow it live with -f",
		Long: `Changes prints the changelog: one change per line, in sequence order, each
exactly once.

Without -f it replays from --from (default 1, the oldest retained change)
through the last change committed when the command started, then exits. It
finds that head first (it asks the server for the changes after the largest
possible sequence number, which the server refuses with OUT_OF_RANGE stating
where the changelog ends), then reads the unfiltered changelog up to it and
applies --machine and --instance itself, so that it stops exactly there even
when the last change does not match the filters.

With -f it follows the changelog until interrupted, from --from (default: from
now), and resumes by itself without a gap or a duplicate when the server
restarts or ends the stream because the watcher lagged.`,
		Example: "  dfsmr changes --from 1 -o json | jq .seq\n  dfsmr changes -f --machine report",
		Args:    args(cobra.NoArgs),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			print := func(ch *pb.Change) error {
				if a.json() {
					return a.printJSON(ch)
				}
				_, err := fmt.Fprintln(a.stdout, changeLine(ch))
				return err
			}
			if follow {
				req := &pb.ChangesRequest{FromSeq: from, Machine: filter.Machine, Instance: filter.Instance}
				err := c.Follow(a.ctx, req, print)
				if a.ctx.Err() != nil {
					return nil // interrupted: the normal end of -f
				}
				return err
			}

			if !cmd.Flags().Changed("from") {
				from = 1
			}
			if from == 0 {
				return usageErrorf("--from 0 means from now: it needs -f")
			}
			hctx, cancel := a.withTimeout()
			head, err := c.Head(hctx)
			cancel()
			if err != nil {
				return fmt.Errorf("find the changelog head: %w", err)
			}
			if from == head+1 {
				return nil // nothing committed from there yet
			}
			// A from beyond head+1 is left to the server: OUT_OF_RANGE.
			err = c.Follow(a.ctx, &pb.ChangesRequest{FromSeq: from}, func(ch *pb.Change) error {
				if ch.GetSeq() > head {
					return errReachedHead
				}
				if (filter.Machine == "" || ch.GetMachine() == filter.Machine) &&
					(filter.Instance == "" || ch.GetInstance() == filter.Instance) {
					if err := print(ch); err != nil {
						return err
					}
				}
				if ch.GetSeq() == head {
					return errReachedHead
				}
				return nil
			})
			if errors.Is(err, errReachedHead) {
				return nil
			}
			return err
		}),
	}
	f := cmd.Flags()
	f.Uint64Var(&from, "from", 0, "first sequence number (default: 1, or from now with -f)")
	f.BoolVarP(&follow, "follow", "f", false, "follow live changes until interrupted")
	f.StringVar(&filter.Machine, "machine", "", "only changes of this machine")
	f.StringVar(&filter.Instance, "instance", "", "only changes of this instance")
	return cmd
}
