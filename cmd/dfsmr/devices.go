package main

import (
	"fmt"
	"slices"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/spf13/cobra"
)

// Operator signals of the bundled print_job and printer machines.
const (
	signalRetrieved = "retrieved"
	signalRecovered = "recovered"
	signalCleared   = "cleared"
)

func (a *app) devicesCommand() *cobra.Command {
	req := &pb.ListDevicesRequest{}
	cmd := &cobra.Command{
		Use:   "devices",
		Short: "List the devices (printers), in id order",
		Long: `Devices lists every device that ever registered: online or not, when it was
last seen, its node, the job it works on and the number of jobs queued on it.`,
		Args: args(cobra.NoArgs),
		RunE: runE(func(*cobra.Command, []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var all []*pb.Device
			for {
				resp, err := c.Devices.ListDevices(a.ctx, req)
				if err != nil {
					return err
				}
				all = append(all, resp.GetDevices()...)
				if resp.GetNextPageToken() == "" {
					break
				}
				req.PageToken = resp.GetNextPageToken()
			}
			if a.json() {
				for _, d := range all {
					if err := a.printJSON(d); err != nil {
						return err
					}
				}
				return nil
			}
			t := newTable(a.stdout, "ID", "POOL", "ONLINE", "NODE", "JOB", "PROGRESS", "QUEUED", "LAST SEEN")
			for _, d := range all {
				online := "no"
				if d.GetOnline() {
					online = "yes"
				}
				t.row(d.GetId(), orDash(d.GetPool()), online, d.GetNode(), orDash(d.GetJobId()),
					fmt.Sprintf("%.0f%%", 100*d.GetProgress()), d.GetQueueLength(), ts(d.GetLastSeenTime()))
			}
			return t.Flush()
		}),
	}
	cmd.Flags().StringVar(&req.Pool, "pool", "", "only the devices of this pool")
	return cmd
}

func (a *app) orderCommand() *cobra.Command {
	var (
		req      = &pb.SubmitOrderRequest{}
		quantity int
	)
	cmd := &cobra.Command{
		Use:   "order --model M --quantity N (--printer P | --pool P)",
		Short: "Submit a print order: its jobs are queued on a printer or a pool",
		Long: `Order creates --quantity print jobs of --model, queued on --printer or
spread over the printers of --pool (each job to the shortest queue), whatever
the printers' state: a ready printer gets its next job at once. Jobs are
ordered by --priority (higher first), then age. The same --id again returns
the same jobs.`,
		Args: args(cobra.NoArgs),
		RunE: runE(func(*cobra.Command, []string) error {
			if (req.Printer == "") == (req.Pool == "") {
				return usageErrorf("give exactly one of --printer and --pool")
			}
			if quantity < 1 {
				return usageErrorf("--quantity must be at least 1")
			}
			req.Quantity = uint32(min(quantity, 1<<31))
			return unary(a, func(c *client.Client) (*pb.SubmitOrderResponse, error) {
				return c.Devices.SubmitOrder(a.ctx, req)
			}, func(resp *pb.SubmitOrderResponse) error {
				fmt.Fprintf(a.stdout, "order %s\n", clean(resp.GetOrderId()))
				t := newTable(a.stdout, "JOB", "PRINTER", "MODEL", "PRIORITY", "NODE", "STATUS")
				for _, j := range resp.GetJobs() {
					t.row(j.GetId(), j.GetParams()["printer"], j.GetParams()["model"], j.GetPriority(), j.GetNode(), statusName(j.GetStatus()))
				}
				return t.Flush()
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.OrderId, "id", "", "order id, the idempotency key (default: the server picks one)")
	f.StringVar(&req.Model, "model", "", "the model to print (required)")
	f.IntVar(&quantity, "quantity", 1, "number of parts (jobs)")
	f.StringVar(&req.Printer, "printer", "", "queue every job on this printer")
	f.StringVar(&req.Pool, "pool", "", "spread the jobs over this pool's printers")
	f.Int32Var(&req.Priority, "priority", 0, "priority in the printers' queues (higher first)")
	cmd.AddCommand(a.orderStatusCommand(), a.orderReprintCommand())
	return cmd
}

func (a *app) orderStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status ORDER",
		Short: "Show an order's jobs (reprints included) and how many are in each node",
		Args:  args(cobra.ExactArgs(1)),
		RunE: runE(func(_ *cobra.Command, argv []string) error {
			req := &pb.GetOrderRequest{OrderId: argv[0]}
			return unary(a, func(c *client.Client) (*pb.GetOrderResponse, error) {
				return c.Devices.GetOrder(a.ctx, req)
			}, func(resp *pb.GetOrderResponse) error {
				nodes := make([]string, 0, len(resp.GetNodes()))
				for n := range resp.GetNodes() {
					nodes = append(nodes, n)
				}
				slices.Sort(nodes)
				fmt.Fprintf(a.stdout, "order %s: %d jobs, %d reprints;", clean(resp.GetOrderId()), len(resp.GetJobs()), resp.GetReprints())
				for _, n := range nodes {
					fmt.Fprintf(a.stdout, " %s %d", clean(n), resp.GetNodes()[n])
				}
				fmt.Fprintln(a.stdout)
				t := newTable(a.stdout, "JOB", "PRINTER", "NODE", "STATUS", "REPRINT OF", "UPDATED")
				for _, j := range resp.GetJobs() {
					t.row(j.GetId(), j.GetParams()["printer"], j.GetNode(), statusName(j.GetStatus()),
						orDash(j.GetParams()["reprint_of"]), ts(j.GetUpdateTime()))
				}
				return t.Flush()
			})
		}),
	}
}

func (a *app) orderReprintCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "reprint JOB",
		Short: "Queue a failed job's part again, as a new job of its order (JOBr1, JOBr2, ...)",
		Long: `Reprint queues a new job for the part of a job whose print failed (ended in
scrapped), on the same printer, in the same order. Asking twice for the same
job returns the same reprint.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: runE(func(_ *cobra.Command, argv []string) error {
			req := &pb.ReprintJobRequest{JobId: argv[0]}
			return unary(a, func(c *client.Client) (*pb.ReprintJobResponse, error) {
				return c.Devices.ReprintJob(a.ctx, req)
			}, func(resp *pb.ReprintJobResponse) error {
				return a.printInstanceRow(resp.GetJob())
			})
		}),
	}
}

// clearedCommand signals that an operator fixed a printer and cleared its
// bed; its next round sends it the command.
func (a *app) clearedCommand() *cobra.Command {
	return &cobra.Command{
		Use:   signalCleared + " PRINTER",
		Short: "Mark a printer as fixed with its bed clear (printer signal cleared)",
		Long: `Cleared tells a printer in error or waiting_retrieval that an operator fixed it
and took everything off its bed: the printer is sent the cleared command (at
once when it is online, else when it is back) and goes ready. A finished
part taken off with it completes its job.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: runE(func(_ *cobra.Command, argv []string) error {
			req := &pb.SignalDeviceRequest{DeviceId: argv[0], Signal: signalCleared}
			return unary(a, func(c *client.Client) (*pb.SignalDeviceResponse, error) {
				return c.Devices.SignalDevice(a.ctx, req)
			}, func(resp *pb.SignalDeviceResponse) error {
				d := resp.GetDevice()
				t := newTable(a.stdout, "ID", "NODE", "JOB", "SIGNAL")
				t.row(d.GetId(), d.GetNode(), orDash(d.GetJobId()), signalCleared)
				return t.Flush()
			})
		}),
	}
}

// operatorCommand signals an operator's action on a print job, printer
// online or not; the printer's next round acts on it.
func (a *app) operatorCommand(signal, short string) *cobra.Command {
	return &cobra.Command{
		Use:   signal + " JOB",
		Short: short,
		Args:  args(cobra.ExactArgs(1)),
		RunE: runE(func(_ *cobra.Command, argv []string) error {
			req := &pb.SignalInstanceRequest{Id: argv[0], Signal: signal}
			return unary(a, func(c *client.Client) (*pb.SignalInstanceResponse, error) {
				return c.Instances.SignalInstance(a.ctx, req)
			}, func(resp *pb.SignalInstanceResponse) error {
				return a.printInstanceRow(resp.GetInstance())
			})
		}),
	}
}
