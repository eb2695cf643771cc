package machines

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// load parses src into the root mapping of its single document and enforces
// the limits that must hold before anything walks the tree: source size,
// exactly one document, alias count and alias-expanded size.
func (c *compiler) load(src []byte) *yaml.Node {
	if len(src) > MaxSourceBytes {
		c.errs = append(c.errs, &ValidationError{File: c.file,
			Reason: fmt.Sprintf("source is %d bytes, more than the limit of %d", len(src), MaxSourceBytes)})
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var doc yaml.Node
	switch err := decode(dec, &doc); {
	case errors.Is(err, io.EOF):
		c.errAt(nil, "", "empty document: a definition needs at least id and nodes")
		return nil
	case err != nil:
		c.syntaxError(err)
		return nil
	}
	var next yaml.Node
	switch err := decode(dec, &next); {
	case err == nil:
		c.errAt(&next, "", "more than one YAML document: a definition is exactly one document")
		return nil
	case !errors.Is(err, io.EOF):
		c.syntaxError(err)
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		c.errAt(&doc, "", "empty document: a definition needs at least id and nodes")
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		c.errAt(root, "", "empty document: a definition needs at least id and nodes")
		return nil
	}
	if !c.checkAliases(root) {
		return nil
	}
	return root
}

// decode runs the YAML parser and turns any panic inside it into an error:
// Compile must never panic, whatever the input, and the parser is not ours.
func decode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: parser failure: %v", r)
		}
	}()
	return dec.Decode(n)
}

var syntaxLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError records a YAML parse error, with the line the parser names
// (it does not give a column).
func (c *compiler) syntaxError(err error) {
	e := &ValidationError{File: c.file, Reason: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	if m := syntaxLine.FindStringSubmatch(err.Error()); m != nil {
		if line, convErr := strconv.Atoi(m[1]); convErr == nil {
			e.Line = line
			e.Reason = "invalid YAML: " + m[2]
		}
	}
	c.errs = append(c.errs, e)
}

// checkAliases enforces MaxAliases and MaxExpandedNodes. The parser keeps
// aliases as pointers (a tree with shared, even cyclic, branches), so walking
// it naively could take forever; counting first with a budget makes every
// later walk bounded.
func (c *compiler) checkAliases(root *yaml.Node) bool {
	aliases := 0
	var tooMany *yaml.Node
	var count func(n *yaml.Node)
	count = func(n *yaml.Node) {
		if tooMany != nil {
			return
		}
		if n.Kind == yaml.AliasNode {
			aliases++
			if aliases > MaxAliases {
				tooMany = n
			}
			return // the target is counted where it is defined
		}
		for _, child := range n.Content {
			count(child)
		}
	}
	count(root)
	if tooMany != nil {
		c.errAt(tooMany, "", fmt.Sprintf("too many aliases: more than %d", MaxAliases))
		return false
	}

	// Only what aliases pull in counts: without aliases the source size
	// already bounds the tree, and a large machine within MaxNodes and
	// MaxTransitionsPerNode needs far more than MaxExpandedNodes YAML nodes.
	expanded := 0
	var bomb *yaml.Node
	// via is the outermost alias being expanded, nil outside any alias.
	var expand func(n, via *yaml.Node)
	expand = func(n, via *yaml.Node) {
		if bomb != nil {
			return
		}
		if via != nil {
			expanded++
			if expanded > MaxExpandedNodes {
				bomb = via
				return
			}
		}
		if n.Kind == yaml.AliasNode {
			if n.Alias != nil {
				if via == nil {
					via = n
				}
				expand(n.Alias, via)
			}
			return
		}
		for _, child := range n.Content {
			expand(child, via)
		}
	}
	expand(root, nil)
	if bomb != nil {
		c.errAt(bomb, "", fmt.Sprintf("aliases expand to more than %d YAML nodes", MaxExpandedNodes))
		return false
	}
	return true
}

// deref follows an alias to the node it names. The position of a problem
// found in the target is the target's: that is the text to fix.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

// describe names what a node is, for "must be X, got Y" messages.
func describe(n *yaml.Node) string {
	n = deref(n)
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.ScalarNode:
	default:
		return "an alias"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	switch tag := n.ShortTag(); tag {
	case "!!null":
		return "null"
	case "!!str":
		return fmt.Sprintf("string %q", v)
	case "!!int":
		return "integer " + v
	case "!!float":
		return "number " + v
	case "!!bool":
		return "boolean " + v
	case "!!merge":
		return "a merge key (<<)"
	default:
		return fmt.Sprintf("%s %q", tag, v)
	}
}

// str reads a string scalar.
func (c *compiler) str(path string, n *yaml.Node) (string, bool) {
	v := deref(n)
	if v == nil || v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
		c.errAt(n, path, "must be a string, got "+describe(n))
		return "", false
	}
	return v.Value, true
}

// boolean reads true or false. YAML 1.1's yes/no/on/off are strings in the
// YAML 1.2 core schema the parser follows, and are refused rather than
// guessed at.
func (c *compiler) boolean(path string, n *yaml.Node) (bool, bool) {
	v := deref(n)
	if v != nil && v.Kind == yaml.ScalarNode && v.ShortTag() == "!!bool" {
		switch strings.ToLower(v.Value) {
		case "true":
			return true, true
		case "false":
			return false, true
		}
	}
	c.errAt(n, path, "must be true or false, got "+describe(n))
	return false, false
}

// integer reads an integer scalar.
func (c *compiler) integer(path string, n *yaml.Node) (int64, bool) {
	v := deref(n)
	if v != nil && v.Kind == yaml.ScalarNode && v.ShortTag() == "!!int" {
		var i int64
		if err := v.Decode(&i); err == nil {
			return i, true
		}
		c.errAt(n, path, "integer out of range: "+v.Value)
		return 0, false
	}
	c.errAt(n, path, "must be an integer, got "+describe(n))
	return 0, false
}

// number reads an integer or floating-point scalar; NaN and infinities are
// refused.
func (c *compiler) number(path string, n *yaml.Node) (float64, bool) {
	v := deref(n)
	if v != nil && v.Kind == yaml.ScalarNode {
		if tag := v.ShortTag(); tag == "!!int" || tag == "!!float" {
			var f float64
			if err := v.Decode(&f); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f, true
			}
		}
	}
	c.errAt(n, path, "must be a finite number, got "+describe(n))
	return 0, false
}

// duration reads a Go duration string ("30s", "1m30s") or the integer 0 and
// refuses negative values. Bounds are the caller's.
func (c *compiler) duration(path string, n *yaml.Node) (time.Duration, bool) {
	v := deref(n)
	if v != nil && v.Kind == yaml.ScalarNode {
		switch v.ShortTag() {
		case "!!int":
			var i int64
			if err := v.Decode(&i); err == nil && i == 0 {
				return 0, true
			}
			c.errAt(n, path, fmt.Sprintf("a duration needs a unit: write %ss, %sm or %sh (only 0 may go without one)", v.Value, v.Value, v.Value))
			return 0, false
		case "!!str":
			d, err := time.ParseDuration(v.Value)
			if err != nil {
				c.errAt(n, path, fmt.Sprintf("invalid duration %q: write a Go duration such as 30s, 1m30s or 2h", v.Value))
				return 0, false
			}
			if d < 0 {
				c.errAt(n, path, fmt.Sprintf("duration %s must not be negative", v.Value))
				return 0, false
			}
			return d, true
		}
	}
	c.errAt(n, path, "must be a duration such as 30s or 1m30s, got "+describe(n))
	return 0, false
}

// FormatDuration prints a duration without the trailing zero units Go adds
// ("1m" rather than "1m0s"), for messages and graph labels.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
