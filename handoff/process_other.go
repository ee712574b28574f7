//go:build !linux

package handoff

// osProcess leaves e's process-level effects unset: nothing here starts,
// signals or follows another process.
func osProcess(e *env) {}
