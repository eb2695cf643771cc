// Package gen holds the Go code generated from proto/ by buf; the API itself
// is package dfsmrv1 in gen/dfsmr/v1. Generated files are committed, and
// regenerating them must give the same bytes (.ci/run checks it).
package gen

// go generate runs in this directory; buf must run at the repository root,
// where buf.yaml and buf.gen.yaml live.
//go:generate sh -c "cd .. && go tool -modfile=tools/go.mod buf generate"
