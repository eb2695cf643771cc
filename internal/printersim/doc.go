// Package printersim simulates 3D printers that speak dfsmr's
// DeviceService.Connect, and the operators who tend them. Tests use it to
// drive the reactive loop end to end, the soak test and the benchmark to
// load a server, and `dfsmr printer-sim` to demo it.
//
// Printer is the hardware and firmware of one printer: a pure, seeded
// state machine (ready, printing, waiting_retrieval, error) that carries
// out the server's commands only when they still match its state, and
// finishes, fails or loses power on its own while printing. Run connects
// one Printer to a server and runs its loop over a Connect stream
// (client.Device): it reports every change, obeys or rejects commands,
// drops its connection now and then and reconnects, and comes back in
// error after a power loss.
// Operator follows the changelog and, after a delay, signals the jobs
// whose part waits on a bed (retrieved) or whose printer failed
// (recovered), like the humans in the print room.
package printersim
