// Package app is the process around a PDF server: flags, signals, the
// handoff upgrader, the upgrade modes and the state file used when a
// server starts cold. Both binaries are one call:
//
//	os.Exit(app.Run("v1.0.0", ledger.NewV1(), os.Args[1:]))
//
// pdf -h says what the program is and what its signals do;
// examples/pdf/README.md says all of it: flags, signals, the state file and
// its marker, the upgrade modes and the exit codes. The files, in the
// order a process meets them:
//
//   - app.go: flags, Run, start (the upgrader, the ledger, the listener)
//     and run (the signals).
//   - state.go: the state file across a cold restart and its marker
//     PATH.running, which makes a start refuse to pass off an older or
//     empty ledger as current; the final save at a stop.
//   - snapshot.go: -snapshot, the ledger written while serving.
//   - upgrade.go: an upgrade on SIGHUP; listeners mode's drain
//     (Upgrader.Drain).
//   - restart.go: restart mode, which executes the binary again in place.
//   - metrics.go: -metrics, /metrics /alive /ready.
package app
