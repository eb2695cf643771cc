package server

import (
	"fmt"
	"maps"
	"slices"
	"unicode"
	"unicode/utf8"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/fsm"
)

// Names (instance, device and order ids, worker and pool names, param keys,
// transition and signal names) end up in terminals, logs and file names.
// A control character or a bidirectional override in one would let whoever
// chose it rewrite what an operator sees (an ESC sequence that clears a
// line, a right-to-left override that reverses an id), so the server
// refuses them. Param values and free text (reasons) are data: they are
// stored as given, and the CLI escapes them when it prints them.

// nameProblem says what makes s unfit as a name, or "" when it is fine.
func nameProblem(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for i, r := range s {
		switch {
		case unicode.Is(unicode.Cc, r):
			return fmt.Sprintf("must not contain the control character %U (byte %d)", r, i)
		case machines.IsBidiControl(r):
			return fmt.Sprintf("must not contain the bidirectional control %U (byte %d)", r, i)
		}
	}
	return ""
}

// checkNames checks field/value pairs, in order, and returns an
// INVALID_ARGUMENT error naming the first field that holds an unfit name.
func checkNames(fieldValues ...string) error {
	for i := 0; i+1 < len(fieldValues); i += 2 {
		if p := nameProblem(fieldValues[i+1]); p != "" {
			return &fsm.InvalidError{Field: fieldValues[i], Reason: p}
		}
	}
	return nil
}

// checkParamKeys checks the keys of a params map as names; field is the
// map's field name, the violation names the key ("params[key]", quoted
// the way Go quotes strings so that the message itself is safe).
func checkParamKeys(field string, params map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if p := nameProblem(k); p != "" {
			return &fsm.InvalidError{Field: fmt.Sprintf("%s[%+q]", field, k), Reason: "key " + p}
		}
	}
	return nil
}
