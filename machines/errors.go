package machines

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// ValidationError is one problem in a definition, with its position.
//
// Line and Column are 1-based and point at the offending key or value; they
// are 0 when unknown (a source that is too large, a YAML syntax error the
// parser reports without a column). Field is the dotted path of the
// offending field, such as "nodes.crawl.retry.backoff"; it is empty for
// problems of the document as a whole.
type ValidationError struct {
	File   string
	Line   int
	Column int
	Field  string
	Reason string
}

// Error renders the error as "file:line:col: field: reason". Parts that are
// unknown (a zero line or column, an empty file or field) are left out.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		if b.Len() > 0 {
			b.WriteByte(':')
		}
		b.WriteString(strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(e.Column))
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// ValidationErrors is what Compile returns when a definition has several
// problems: sorted by position, at most MaxErrors of them. errors.As with a
// **ValidationError target finds the first one.
type ValidationErrors []*ValidationError

// Error renders one error per line.
func (es ValidationErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes every error to errors.Is and errors.As, in order.
func (es ValidationErrors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// AsValidationErrors returns every validation error in err, whether Compile
// returned one (*ValidationError) or several (ValidationErrors), so that a
// caller can report them all (as gRPC field violations, say). It returns nil
// when err holds no validation error.
func AsValidationErrors(err error) ValidationErrors {
	var es ValidationErrors
	if errors.As(err, &es) {
		return es
	}
	var e *ValidationError
	if errors.As(err, &e) {
		return ValidationErrors{e}
	}
	return nil
}

// result turns collected problems into Compile's error: nil, the one
// error, or the sorted, de-duplicated and capped list.
func result(errs []*ValidationError) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	slices.SortStableFunc(errs, func(a, b *ValidationError) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	// One anchored block used through several aliases yields the same
	// problem at the same place more than once.
	errs = slices.CompactFunc(errs, func(a, b *ValidationError) bool { return *a == *b })
	if len(errs) > MaxErrors {
		errs = errs[:MaxErrors]
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return ValidationErrors(errs)
}
