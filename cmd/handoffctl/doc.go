// Command handoffctl is the operator's tool for the files the statefile
// package writes (the state a process hands to its successor, or leaves on
// disk for the next start) and for a running server's control socket
// (handoff.Options.ControlSocket, see handoff/CONTROL.md).
//
// Usage:
//
//	handoffctl inspect FILE
//	handoffctl status  (-socket PATH | -pidfile PATH) [-json]
//	handoffctl upgrade (-socket PATH | -pidfile PATH) [-binary PATH] [-timeout D] [-app NAME] [-json]
//	handoffctl probe   (ready | live) (-socket PATH | -pidfile PATH)
//	handoffctl wait    serving (-socket PATH | -pidfile PATH) [-timeout D]
//
// status prints the server's pid, version, generation, uptimes, connections,
// upgrade totals and last upgrade with each phase's time (in a process that
// has not upgraded yet, the upgrade that started it; in Rolling mode its
// connections count as they move). upgrade starts an upgrade and prints each
// phase as it ends (one progress line on a terminal, a line each otherwise),
// then the outcome; it exits 0 only if the new process committed. With
// -pidfile the socket is the one listening Unix socket among the fds of the
// pid in the file (/proc/PID/fd matched against /proc/net/unix). -json
// prints the server's JSON lines as they are. handoffctl -h lists the exit
// statuses: 0 done, 1 rolled back, 2 usage, 3 unreachable, 4 refused.
//
// probe is an orchestrator's probe (a Kubernetes exec probe) on the
// server's status: ready passes while the server starts (a new container
// taking over), serves, upgrades, or idles after handing over to a peer;
// live passes while it answers and has not stopped. It prints one line
// and exits 0 if the probe passes, non-zero otherwise.
//
// wait serving blocks until the server serves, asking its status again
// and again: a new container's postStart hook that must not return before
// its takeover committed (OpenKruise's SidecarSet resets the old container
// once it returns). It exits 0 once the phase is serving, or handed-over
// (the process served and handed over, or is the SidecarSet's empty image,
// which gets the same hook and never serves); 1 at once if the process
// stopped (its takeover failed), and 1, or 3 if the server could not be
// reached, after -timeout (default 1m). A socket not there yet is asked
// again: the hook may run before the process has opened it.
//
// inspect prints the file's header and one line per section with its
// length, reading the file as a stream and checking every checksum on the
// way, and ends with "checksum: ok" when the whole file verifies. It is
// the first thing to run on a file that a start refused, such as one that
// statefile.ReadFile moved aside as FILE.corrupt-TIME:
//
//	$ handoffctl inspect state.bin.corrupt-20250301T120000.000000000Z
//	app:        "ledger"
//	schema:     2
//	...
//	section 0: "accounts", 1500 bytes
//	section 1: "pending", 0 bytes
//	section 2: "journal", unreadable after 65536 bytes
//	handoffctl: state.bin.corrupt-...: statefile: corrupt: checksum mismatch: chunk of 65536 bytes in section "journal" at offset 67144
//
// What was read before the error is printed, so the output shows where the
// file broke; the error goes to standard error.
//
// inspect's exit status: 0 when the file verifies, 1 when it does not or
// cannot be read, 2 for a usage error.
package main
