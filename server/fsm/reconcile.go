package fsm

// ReconcileTable is a device machine's reactive loop as data: for the node
// a device is in and the node of its job, which command to send the device
// and which transition to record on the job. It is compiled from the
// `reconcile` block of a device machine's definition.
type ReconcileTable struct {
	// Jobs is the id of the machine (of kind job) whose instances are the
	// device's jobs.
	Jobs string
	// Rules in definition order; no two share a (Device, Job) pair.
	Rules []Rule
}

// Rule is one row of a ReconcileTable. A rule may both record a job
// transition and send a command; a rule with neither says "nothing to do"
// explicitly (a busy printer).
type Rule struct {
	// Device is a node of the device machine.
	Device string
	// Job is a node of the job machine: the node of the device's current
	// job, or, when it has none, of the head of its queue.
	Job string
	// Command, when set, is a transition of the device machine out of
	// Device (which is then a blocking node) to send to the device.
	Command string
	// Transition, when set, is a non-signal transition of the job machine
	// out of Job to record on the job.
	Transition string
	// Forgotten, when set, is a non-signal job transition recorded instead
	// of Transition and Command when the device reports the pair without
	// the job after it came to Device from another node while holding it,
	// or after it carried out Command for it: it dropped the job (it
	// stopped, or forgot it in a power cut). Command is then not sent.
	Forgotten string
	// ForgottenNotice, when set, is told to operators when Forgotten is
	// recorded.
	ForgottenNotice string
	// Notice, when set, is told to operators (a changelog entry) when the
	// rule's transition is recorded.
	Notice string
	// Wait, when set, says why a rule with neither command nor transition
	// does nothing: what the pair waits for (an operator's signal, the
	// device's next report), or why the pair cannot happen.
	Wait string
}

// NoJob is the job node of a rule for a device with no job and an empty
// queue. Such a rule only waits: it has neither command nor transition.
const NoJob = "none"

// Lookup returns the rule for a device node and a job node.
func (t *ReconcileTable) Lookup(device, job string) (Rule, bool) {
	if t == nil {
		return Rule{}, false
	}
	for _, r := range t.Rules {
		if r.Device == device && r.Job == job {
			return r, true
		}
	}
	return Rule{}, false
}

// IsCommand reports whether name is a command of some rule: a device
// transition that the device only takes when the server says so.
func (t *ReconcileTable) IsCommand(name string) bool {
	if t == nil {
		return false
	}
	for _, r := range t.Rules {
		if r.Command == name {
			return true
		}
	}
	return false
}
