// Package sim is dfsmr's deterministic simulation: the real engine over the
// real bbolt store (a file in a temporary directory), driven from one
// goroutine by one seeded PRNG and a fake clock.
//
// Simulated clients and workers send random operations through a simulated
// network that loses, duplicates, delays and reorders requests and
// responses. The simulator crashes and restarts the server (the engine's
// memory is dropped and the bbolt file reopened), fails store commits
// before or after they are durable, expires leases and jumps the clock
// forward. After every step it checks the invariants of dfsmr (see
// checker), at the end that every instance finishes once faults stop
// (liveness), and that the history of client calls is linearizable against
// a sequential model of the API (see model.go), partitioned per instance,
// with every call whose reply was lost left open-ended.
//
// Simulated printers run device rounds on the bundled printer machine
// (see devices.go): they connect, report, carry out commands or refuse
// them as stale, finish or fail prints, lose power mid-print (and come
// back in error holding the job), disconnect and reconnect, and lose their
// streams when the server crashes. Orders queue print jobs on a printer or
// a pool, and an operator signals retrieved and recovered. These calls go
// straight to the engine and stay out of the linearizability model; after
// every tick the checker follows each job against the print_job machine and
// checks the printers' records against the jobs and the printers
// themselves: no job printing on two printers, no printer holding two
// jobs, every job in progress named by its own printer's record.
//
// The same seed gives the same run: the same trace, byte for byte, and the
// same final hash. Run one with `dfsmr dst --seed S --ticks T`.
//
// The scheduler's heap is the real sched.Heap, kept in step by the commit
// hook as the engine's scheduler keeps it, and fired through
// Engine.FireDue; the simulator never starts the engine's goroutines.
package sim
