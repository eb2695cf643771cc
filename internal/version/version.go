// Package version describes the running binary from the build information
// the Go toolchain embeds: the module version and, when the binary was built
// in a version-controlled checkout, the revision and whether the work tree
// had uncommitted changes.
package version

import (
	"runtime/debug"
	"strings"
)

// String returns one line naming the program and its build, such as
// "dfsmrd v1.2.0 (revision 0123abcd4567, modified, go1.26.7)". Parts the
// build does not record are left out; a binary built from a checkout
// without a tag shows the version "(devel)".
func String(program string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return program + " (no build information)"
	}
	return format(program, info)
}

// format is String with the build information given.
func format(program string, info *debug.BuildInfo) string {
	v := info.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var details []string
	var modified bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			details = append(details, "revision "+s.Value)
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified {
		details = append(details, "modified")
	}
	if info.GoVersion != "" {
		details = append(details, info.GoVersion)
	}
	if len(details) == 0 {
		return program + " " + v
	}
	return program + " " + v + " (" + strings.Join(details, ", ") + ")"
}
