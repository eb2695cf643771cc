package machines

import (
	"embed"
	"io/fs"
)

//go:embed *.yaml
var bundled embed.FS

// Source is one definition's text and the file it comes from.
type Source struct {
	// File is the file name, such as "report.yaml".
	File string
	// Data is the YAML text; the caller owns it.
	Data []byte
}

// Bundled returns the definitions embedded in the binary, sorted by file
// name. The server defines them at startup and the CLI prints them as
// examples; a test makes sure each compiles.
func Bundled() []Source {
	entries, err := fs.ReadDir(bundled, ".")
	if err != nil {
		// The embedded file system is fixed at build time; reading its root
		// cannot fail.
		panic("machines: reading embedded definitions: " + err.Error())
	}
	out := make([]Source, 0, len(entries))
	for _, e := range entries { // ReadDir sorts by name
		data, err := bundled.ReadFile(e.Name())
		if err != nil {
			panic("machines: reading embedded " + e.Name() + ": " + err.Error())
		}
		out = append(out, Source{File: e.Name(), Data: data})
	}
	return out
}
