// Command dfsmr is the command-line client of a dfsmr server, for operators
// and scripts: one subcommand per RPC, human tables by default and protojson
// (one object per line) with -o json.
//
// Exit codes: 0 success; 1 the call failed (the gRPC status is printed as
// "dfsmr: CODE: message", followed by one line per field violation); 2 the
// command line is wrong; 3 "ready" found no work.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
