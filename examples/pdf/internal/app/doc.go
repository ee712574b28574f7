// Package app is the process around a PDF server: flags, logging, the
// handoff upgrader, and the state file used when a server starts cold.
//
// Both binaries are one call:
//
//	os.Exit(app.Run("v1.0.0", ledger.NewV1(), os.Args[1:]))
//
// Flags: -listen ADDR, -pidfile PATH, -state PATH, -state-reset,
// -state-accept-stale, -upgrade-timeout DUR, -upgrade-mode
// full|rolling|listeners|restart, -drain-timeout DUR, -metrics ADDR. pdf -h says what the program
// is and what its signals do; examples/pdf/README.md says all of it.
//
// -metrics ADDR serves /metrics, /alive and /ready (package
// github.com/handoff-dev/handoff/metrics) on a listener inherited across
// upgrades, from Ready on; pdf_requests_total{command} and the handoff_*
// counters continue from process to process.
//
// SIGHUP upgrades to whatever binary is now at the path this one was started
// from, in one of four ways, so that a benchmark can compare them on
// otherwise identical servers:
//
//   - full (the default): the handoff library hands the listener, every
//     connection and the ledger to the new process.
//   - rolling: the library's Rolling mode. The listener and a snapshot of
//     the ledger, taken while serving, go first; then each connection
//     moves at its own next request boundary, carrying the accounts it
//     changed, which the new process sets over the snapshot's values
//     (server.RollingUpgrades). Exact only while each account is used by
//     one connection at a time.
//   - listeners: what tableflip-style libraries do. The old process writes
//     the ledger to -state and hands over the listener alone; the new
//     process restores the file as a cold start does. The old process stops
//     accepting once the new one is ready, serves its connections for
//     -drain-timeout (default 5s), closes them and exits; their clients
//     reconnect. Changes made on the old process after the snapshot are lost.
//   - restart: the process writes the ledger to -state (if that fails, it
//     carries on), closes its listener and connections and executes the
//     binary again (same pid, same arguments, no fd but stdin, stdout and
//     stderr kept); the new image restores the file.
//
// The listeners and restart modes refuse to start without -state. Every
// mode logs "upgrade starting" and "upgrade complete" (for restart, by the
// new image), or "upgrade failed"; listeners mode logs "drain done" with the
// number of connections it closed.
//
// SIGTERM or SIGINT writes the ledger to -state, if set, and exits 0,
// unless an upgrade has committed, in which case the successor owns the
// ledger and saves it when it stops, and this process exits 0 without
// saving (handoff.Upgrader.Stop returns handoff.ErrHandedOver). If the save
// fails (a full or read-only disk), the process logs "state not saved;
// still serving" at ERROR and serves on; the next SIGTERM tries again.
//
// The state file is money, so a start never passes off an older or empty
// ledger as current (state.go):
//
//   - Every start with -state first checks that it can create a file in
//     the state file's directory, and refuses (exit 1) if not.
//   - PATH.running, the marker, exists while a server that has not saved
//     its final snapshot serves the ledger: written before serving, removed
//     by a successful final save, taken over by the new process of an
//     upgrade. A cold start that finds it refuses (exit 1), since PATH is
//     older than what clients were told; -state-accept-stale serves it
//     anyway, with an ERROR line.
//   - A corrupt PATH is moved aside to PATH.corrupt-TIME and the start
//     refuses (exit 1), and so does every later start while PATH is missing
//     and such a file is there; -state-reset starts empty on purpose, with
//     a WARN line, moving any PATH aside to PATH.reset-TIME.
//
// Both flags act on a cold start only: the new process of an upgrade and
// the image a restart executes take over the ledger as it was.
//
// Exit codes: 0 after a stop that saved the ledger or found it handed over
// (and for -h), 1 if the server refused to start or failed, 2 for a usage
// error (a bad flag, a stray argument, flags that exclude each other).
package app
