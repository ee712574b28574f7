//go:build !linux

package main

import "os"

// isTerminal reports whether f is a character device: a terminal, or a
// device such as /dev/null, where progress lines cost nothing. Upgrades
// run on Linux; elsewhere handoffctl builds for developers, and inspect
// runs.
func isTerminal(f *os.File) bool {
	if f == nil {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
