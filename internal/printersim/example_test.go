package printersim_test

import (
	"fmt"
	"math/rand/v2"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/printersim"
)

// A printer is a pure state machine: it takes commands and the time, and
// says what happened. Run connects one to a server; here it is driven by
// hand.
func ExamplePrinter() {
	p := printersim.NewPrinter("printer-1", printersim.Profile{PrintTime: time.Hour, PrintJitter: -1},
		rand.New(rand.NewPCG(1, 1)))
	at := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)

	ev, _ := p.Command(&pb.DeviceCommand{Seq: 1, Name: "print", Node: "ready", JobId: "o-1",
		Params: map[string]string{"model": "benchy"}}, at)
	fmt.Println(ev)
	// A late duplicate of the print command no longer matches: refused.
	_, rej := p.Command(&pb.DeviceCommand{Seq: 2, Name: "print", Node: "ready", JobId: "o-1"}, at)
	fmt.Println(rej.GetReason())
	fmt.Printf("%+v\n", p.State(at.Add(30*time.Minute)))

	end, _ := p.Next()
	ev, _ = p.Advance(end)
	fmt.Println(ev)
	ev, _ = p.Command(&pb.DeviceCommand{Seq: 3, Name: "done", Node: "waiting_retrieval", JobId: "o-1"}, end)
	fmt.Println(ev)
	fmt.Printf("%+v\n", p.State(end))
	// Output:
	// 08:00:00.000 printer-1    printing           job=o-1 cmd=1 benchy
	// stale: print was decided for node ready, printer is in printing with job o-1
	// {Node:printing Job:o-1 Progress:0.5 LastCommand:1}
	// 09:00:00.000 printer-1    finished           job=o-1
	// 09:00:00.000 printer-1    cleared            job=o-1 cmd=3
	// {Node:ready Job: Progress:0 LastCommand:3}
}
