package handoff

import (
	"fmt"
	"runtime/debug"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxAppName bounds Options.App, so that it fits a HELLO and an operator's
// control request with room to spare.
const maxAppName = 256

// defaultApp is Options.App's default: the import path of the main
// package, which every binary built from it shares, whatever its file is
// called or where it is deployed. (Built from files, go build main.go, a
// binary says command-line-arguments, and nothing in its build
// information tells it from another such binary: Options.App says to
// set App then.)
func defaultApp() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.Path
	}
	return ""
}

// checkAppName refuses a name an operator could not type in a control
// request (CONTROL.md): one without spaces or control characters.
func checkAppName(name string) error {
	if len(name) > maxAppName {
		return fmt.Errorf("application name of %d bytes, at most %d", len(name), maxAppName)
	}
	if !utf8.ValidString(name) || strings.IndexFunc(name, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}) >= 0 {
		return fmt.Errorf("application name %q holds spaces, control characters or invalid UTF-8", name)
	}
	return nil
}
