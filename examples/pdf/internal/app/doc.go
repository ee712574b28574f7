// Package app is the process around a PDF server: flags, logging, the
// handoff upgrader, and the state file used when a server starts cold.
//
// Both binaries are one call:
//
//	os.Exit(app.Run("v1.0.0", ledger.NewV1(), os.Args[1:]))
//
// Flags: -listen ADDR, -pidfile PATH, -state PATH, -upgrade-timeout DUR.
//
// SIGHUP upgrades to whatever binary is now at the path this one was started
// from (the handoff library does it). SIGTERM or SIGINT writes the ledger to
// -state, if set, and exits 0; a later start without a parent loads that file.
// A state file that fails to load is moved aside to PATH.corrupt-<unix time>
// and the server starts empty, so a bad file never keeps the service down.
package app
