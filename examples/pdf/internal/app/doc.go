// Package app is the process around a PDF server: flags, logging, the
// handoff upgrader, and the state file used when a server starts cold.
//
// Both binaries are one call:
//
//	os.Exit(app.Run("v1.0.0", ledger.NewV1(), os.Args[1:]))
//
// Flags: -listen ADDR, -pidfile PATH, -state PATH, -upgrade-timeout DUR,
// -upgrade-mode full|listeners|restart, -drain-timeout DUR.
//
// SIGHUP upgrades to whatever binary is now at the path this one was started
// from, in one of three ways, so that a benchmark can compare them on
// otherwise identical servers:
//
//   - full (the default): the handoff library hands the listener, every
//     connection and the ledger to the new process.
//   - listeners: what tableflip-style libraries do. The old process writes
//     the ledger to -state and hands over the listener alone; the new
//     process restores the file as a cold start does. The old process stops
//     accepting once the new one is ready, serves its connections for
//     -drain-timeout (default 5s), closes them and exits; their clients
//     reconnect. Changes made on the old process after the snapshot are lost.
//   - restart: the process closes its listener and connections, writes the
//     ledger to -state and executes the binary again (same pid, same
//     arguments, no fd but stdin, stdout and stderr kept); the new image
//     restores the file.
//
// The listeners and restart modes refuse to start without -state. Every
// mode logs "upgrade starting" and "upgrade complete" (for restart, by the
// new image), or "upgrade failed"; listeners mode logs "drain done" with the
// number of connections it closed.
//
// SIGTERM or SIGINT writes the ledger to -state, if set, and exits 0; a later
// start without a parent loads that file. A state file that fails to load is
// moved aside to PATH.corrupt-<unix time> and the server starts empty, so a
// bad file never keeps the service down.
package app
