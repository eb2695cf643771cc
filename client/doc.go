// Package client is the Go client of dfsmr: one connection and the typed
// stubs of every service, plus the loops that a caller should not have to
// write again.
//
// Dial connects (lazily, as grpc.NewClient does) and Close releases the
// connection. The generated stubs are fields, so every RPC is a plain call:
//
//	c, err := client.Dial("127.0.0.1:5003")
//	...
//	resp, err := c.Instances.StartInstance(ctx, &pb.StartInstanceRequest{Machine: "report", Id: "item-1"})
//
// On top of them:
//
//   - Follow tails the changelog and resumes by itself, without a gap or a
//     duplicate, when the server ends the stream because the watcher lagged
//     (ABORTED) or because the server restarted (UNAVAILABLE). With
//     StopAtHead it replays "everything up to now" instead, and returns once
//     it has delivered the changes through the head.
//   - ListAllInstances and ListAllMachines walk every page.
//   - Worker runs a handler per machine and node: it leases with batched
//     long polls, runs handlers with bounded concurrency, heartbeats long
//     ones, reports their transitions (in batches), retries its own calls
//     on UNAVAILABLE and drains on Stop.
//
// Errors are gRPC statuses, returned as they come: use status.Code and
// status.Convert to inspect them.
package client
