package main

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/version"
	"github.com/spf13/cobra"
)

// completionTimeout bounds the calls shell completion makes: a server that
// does not answer in time gives no suggestions rather than a stuck prompt.
const completionTimeout = 2 * time.Second

// completionLimit is the most ids one completion lists.
const completionLimit = 1000

// The commands whose first argument is a machine id or an instance id, by
// name, and the flags that take a machine id.
var (
	machineArgCommands  = []string{"start", "machine", "graph"}
	instanceArgCommands = []string{"get", "signal", "cancel", "transition", "heartbeat", "relinquish", signalRetrieved, signalRecovered}
	machineFlags        = []string{"machine"}
)

// extendRoot adds --version and the shell completion of machine and
// instance ids, asked of the server, to the command tree under root.
// Cobra's "completion bash|zsh|fish|powershell" prints the scripts that use
// it.
func (a *app) extendRoot(root *cobra.Command) {
	root.Version = version.String("dfsmr")
	root.SetVersionTemplate("{{.Version}}\n")
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		switch name := c.Name(); {
		case c.ValidArgsFunction != nil:
		case slices.Contains(machineArgCommands, name):
			c.ValidArgsFunction = a.completeFirst(a.machineIDs)
		case slices.Contains(instanceArgCommands, name):
			c.ValidArgsFunction = a.completeFirst(a.instanceIDs)
		}
		for _, f := range machineFlags {
			if c.LocalFlags().Lookup(f) != nil {
				// Fails only for a flag that already completes.
				_ = c.RegisterFlagCompletionFunc(f, a.complete(a.machineIDs))
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

type completionFunc = func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective)

// completeFirst completes the first argument with ids, and nothing after.
func (a *app) completeFirst(ids func(context.Context, *client.Client) ([]string, error)) completionFunc {
	f := a.complete(ids)
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return f(cmd, args, toComplete)
	}
}

// complete lists the ids that start with what was typed. Any failure
// (no server, no permission, a timeout) gives no suggestions.
func (a *app) complete(ids func(context.Context, *client.Client) ([]string, error)) completionFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		c, err := a.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(a.ctx, completionTimeout)
		defer cancel()
		all, err := ids(ctx, c)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, id := range all {
			if strings.HasPrefix(id, toComplete) {
				out = append(out, id)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func (a *app) machineIDs(ctx context.Context, c *client.Client) ([]string, error) {
	ms, err := c.ListAllMachines(ctx, completionLimit)
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.GetId())
	}
	return ids, err
}

func (a *app) instanceIDs(ctx context.Context, c *client.Client) ([]string, error) {
	is, err := c.ListAllInstances(ctx, &pb.ListInstancesRequest{}, completionLimit)
	var ids []string
	for _, i := range is {
		ids = append(ids, i.GetId())
	}
	return ids, err
}

// memberIDs lists the cluster's member ids. Members asks every member for
// its status, which takes up to a second when one is down: well within
// completionTimeout.
func (a *app) memberIDs(ctx context.Context, c *client.Client) ([]string, error) {
	resp, err := c.Cluster.Members(ctx, &pb.MembersRequest{})
	var ids []string
	for _, m := range resp.GetMembers() {
		ids = append(ids, m.GetId())
	}
	return ids, err
}
