// Package machines turns machine definitions written in YAML into compiled,
// validated fsm.Machine values, fingerprints them, renders them as graphs,
// and embeds the definitions that ship with dfsmr.
//
// Compile walks the YAML node tree itself rather than decoding into structs,
// so that every problem carries the file, line and column of the offending
// key or value, and so that every limit is enforced before any work grows
// with the input. It reports all the problems it finds at once.
//
// # Schema
//
//	id: report                 # required; ^[a-z][a-z0-9_-]{0,63}$
//	kind: workflow             # workflow (default) | device | job
//	description: free text     # optional, at most 1024 bytes
//	upgrade_strategy: continue # continue (default) | upgrade | abort
//	nodes:                     # required mapping, definition order preserved, 1..256 nodes
//	  downloadable:            # node names: ^[A-Za-z][A-Za-z0-9_-]{0,63}$
//	    start: true            # exactly one node has start: true
//	    timeout: 30s           # lease timeout: Go duration; 0 = never expires (at-most-once);
//	                           # or {percentile: 95, min: 5s, max: 10m} (0<percentile<100, 0<min<=max)
//	                           # omitted on a non-final node: DefaultTimeout = 1m
//	    retry: {max_attempts: 8, backoff: exponential, initial: 1s, max: 5m, jitter: 0.2}
//	                           # backoff fixed|linear|exponential; max_attempts >= 0 (0 = unlimited);
//	                           # jitter in [0,1]; initial >= 0 (0s: retry at once); max >= initial.
//	                           # Omitted fields take the defaults: max_attempts 10, exponential,
//	                           # initial 1s, max 5m (raised to initial when initial is above it), jitter 0.1
//	    transitions:           # mapping name -> target; <= 64 per node; names as for nodes
//	      ok: uploadable                               # plain target
//	      throttled: {to: downloadable, delay: 30s}   # delayed: 0 < delay <= fsm.MaxDelay
//	      retrieved: {to: done, signal: true}          # signal: external event, no lease needed
//	  completed: {final: true} # final nodes: no transitions, no timeout, no retry
//	breaker:                   # optional circuit breaker settings (fsm.BreakerPolicy), or: breaker: off
//	  window: 50               # 1..64 recent outcomes kept
//	  min_outcomes: 20         # 1..window outcomes before it may open
//	  open_share: 0.5          # (0, 1] failure share that opens it
//	  close_share: 0.25        # [0, open_share] failure share below which it closes
//	  close_streak: 5          # 1..64 successes in a row that close it
//	  delay: 30s               # 0..fsm.MaxDelay extra wait of every retry while open
//	                           # omitted fields (or the whole block): fsm.DefaultBreakerPolicy
//
// Schema returns the same rules as a JSON Schema, built from the key
// lists, enums, patterns and limits the compiler itself uses, for editors
// that run yaml-language-server; SchemaFile is the committed copy, which a
// test keeps in sync.
//
// # Devices and their jobs
//
// A machine of kind device describes the states of a connected device (the
// bundled printer); a machine of kind job describes a device's jobs (the
// bundled print_job). Job instances are HELD: WorkService.Ready never hands
// them out; their device's rounds and operator signals move them. A device
// machine marks the nodes in which the device waits for a command, and
// carries the reactive loop as a table:
//
//	nodes:
//	  ready: {start: true, blocking: true, transitions: {print: printing}}
//	  ...
//	reconcile:
//	  jobs: print_job          # a machine of kind job
//	  rules:                   # 1..MaxRules; at most one rule per (device, job) pair
//	    - device: ready        # required: a non-final node of this machine
//	      job: queued          # required: a non-final node of the job machine,
//	                           # or none: no job and an empty queue (wait only)
//	      command: print       # optional: a transition out of the device node,
//	                           # which must be blocking
//	      transition: dispatch # optional: a non-signal transition out of the job node
//	      notice: free text    # optional, needs a transition; at most 1024 bytes
//	      forgotten: failed    # optional: a job transition recorded instead when
//	                           # the device dropped the job (see fsm.Rule)
//	      forgotten_notice: .. # optional, needs forgotten
//	      wait: free text      # optional, only without command and transition:
//	                           # what the pair waits for
//
// A round looks up (the device's node, its current job's node or, with no
// current job, its queue head's node, or none): it records the transition
// on the job and sends the command. A device machine's signal transitions
// (signal: true) are operators' actions on the device, sent to it as
// commands (engine.SignalDevice). Rule order does not matter. Only device machines
// have blocking nodes and a reconcile table; a job machine's transitions
// have no delay and never lead back to their own node (a job never waits
// or retries on its own). Compile checks the table against the device
// machine itself; CompileWith, given a Resolver, also checks the job side
// (the machine exists, is of kind job, and has the nodes and transitions
// the rules name), with the same file:line:col errors.
//
// Details:
//
//   - Durations are Go duration strings ("30s", "1m30s", "2h"; see
//     time.ParseDuration) or the integer 0. Negative durations are refused.
//     Lease timeouts (fixed, or a percentile timeout's max) are at most
//     MaxTimeout (30 days); delays and retry intervals at most fsm.MaxDelay.
//     A delay of 0 is the same as no delay.
//   - A percentile timeout needs all three of percentile, min and max.
//   - Final nodes compile with a zero Timeout and a zero Retry; writing
//     timeout, retry or transitions on a final node is an error, as is a
//     final start node.
//   - Non-final nodes without a retry block get DefaultRetry; a partial retry
//     block takes its missing fields from it.
//   - Names under "dfsmr." (fsm.SystemPrefix) belong to the system and are
//     refused as machine ids, node names, transition names and targets.
//   - Every node must be reachable from the start node, every non-final node
//     must be able to reach a final node, and at least one node is final.
//   - Unknown fields, duplicate keys, values of the wrong type (start: yes
//     please), YAML merge keys (<<) and more than one YAML document are
//     errors. Anchors and aliases (&name, *name) may be used for whole values,
//     for example to share one retry policy between nodes.
//
// # Limits
//
// A definition is at most MaxSourceBytes long, checked before parsing; it
// uses at most MaxAliases aliases, which together expand to at most
// MaxExpandedNodes YAML nodes (the "billion laughs" guard); it has at most MaxNodes nodes, at
// most MaxTransitionsPerNode transitions per node, and names of at most
// MaxNameLen bytes.
//
// # Errors
//
// Compile returns a *ValidationError for a single problem and
// ValidationErrors, sorted by position and capped at MaxErrors, for several.
// Each renders as "file:line:col: field: reason", where field is the dotted
// path of the offending field ("nodes.crawl.retry.backoff"). Use errors.As
// to get the first, AsValidationErrors to get them all.
//
// # Identity
//
// Fingerprint hashes the compiled machine, not its text: the store defines a
// new version only when the fingerprint changes, so reformatting a
// definition, reordering it, or spelling out a default (a breaker block of
// the defaults included) never creates a version (nor, with upgrade_strategy abort, aborts running instances).
package machines
