package engine

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// ErrAlreadyExists is returned when StartInstance names an existing instance
// with different content (machine, version, params or priority).
var ErrAlreadyExists = errors.New("already exists")

// Limits on request values. They protect the store and every reader of the
// changelog from unbounded records.
const (
	// MaxIDBytes bounds instance, worker and request ids.
	MaxIDBytes = 256
	// MaxParams bounds the number of params one request may set.
	MaxParams = 64
	// MaxParamKeyBytes bounds a param key.
	MaxParamKeyBytes = 128
	// MaxParamValueBytes bounds a param value.
	MaxParamValueBytes = 4 << 10
	// MaxRequestIDBytes bounds a Transition's request id.
	MaxRequestIDBytes = 128
	// MaxReasonBytes bounds free-text reasons.
	MaxReasonBytes = 1 << 10
	// MaxWait bounds a long-polling Ready.
	MaxWait = 5 * time.Minute
	// MaxInstanceParams bounds the params an instance accumulates over its
	// transitions and signals.
	MaxInstanceParams = 256
	// MaxInstanceParamsBytes bounds the total size of an instance's param
	// keys and values.
	MaxInstanceParamsBytes = 256 << 10
	// MaxReadyBatch bounds how many instances one Ready call leases, so one
	// call cannot make a huge transaction or response.
	MaxReadyBatch = 256
	// MaxTransitionBatch bounds how many transitions one TransitionBatch
	// call reports.
	MaxTransitionBatch = 256
	// MaxContinueNodes bounds the nodes one TransitionBatch continues in.
	MaxContinueNodes = 64
)

// wrap adds context to an error of the store, except to a not-found error:
// the store's message already names what was missing, and a message states
// its fact once.
func wrap(err error, format string, args ...any) error {
	if err == nil || errors.Is(err, store.ErrNotFound) {
		return err
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

func invalid(field, format string, args ...any) error {
	return &fsm.InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// checkText validates an id-like string: valid UTF-8, no control
// characters, at most max bytes.
func checkText(field, s string, required bool, max int) error {
	switch {
	case s == "" && required:
		return invalid(field, "must not be empty")
	case len(s) > max:
		return invalid(field, "is %d bytes long; the limit is %d", len(s), max)
	case !utf8.ValidString(s):
		return invalid(field, "is not valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return invalid(field, "contains the control character %U", r)
		}
	}
	return nil
}

func checkParams(field string, params map[string]string) error {
	if len(params) > MaxParams {
		return invalid(field, "has %d entries; the limit is %d", len(params), MaxParams)
	}
	for k, v := range params {
		if err := checkText(field+" key", k, true, MaxParamKeyBytes); err != nil {
			return err
		}
		if len(v) > MaxParamValueBytes {
			return invalid(fmt.Sprintf("%s[%q]", field, k), "is %d bytes long; the limit is %d", len(v), MaxParamValueBytes)
		}
		if !utf8.ValidString(v) {
			return invalid(fmt.Sprintf("%s[%q]", field, k), "is not valid UTF-8")
		}
	}
	return nil
}

// checkParamsGrowth refuses an event whose params would take an instance
// past MaxInstanceParams or MaxInstanceParamsBytes. Only growth is refused,
// so an instance already past a limit can still move on.
func checkParamsGrowth(before, after map[string]string) error {
	nb, na := paramsBytes(before), paramsBytes(after)
	switch {
	case len(after) > MaxInstanceParams && len(after) > len(before):
		return invalid("params", "would give the instance %d params; the limit is %d per instance", len(after), MaxInstanceParams)
	case na > MaxInstanceParamsBytes && na > nb:
		return invalid("params", "would give the instance %d bytes of params; the limit is %d per instance", na, MaxInstanceParamsBytes)
	}
	return nil
}

func paramsBytes(p map[string]string) int {
	n := 0
	for k, v := range p {
		n += len(k) + len(v)
	}
	return n
}
