package main

import (
	"fmt"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/spf13/cobra"
)

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
through the last change committed when the command started, then exits. The
server applies --machine and --instance and ends the replay at that head,
even when the last changes do not match the filters.

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
			if !follow {
				if !cmd.Flags().Changed("from") {
					from = 1
				}
				if from == 0 {
					return usageErrorf("--from 0 means from now: it needs -f")
				}
			}
			// A from beyond head+1 is left to the server: OUT_OF_RANGE.
			req := &pb.ChangesRequest{FromSeq: from, Machine: filter.Machine, Instance: filter.Instance, StopAtHead: !follow}
			err = c.Follow(a.ctx, req, print)
			if follow && a.ctx.Err() != nil {
				return nil // interrupted: the normal end of -f
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
