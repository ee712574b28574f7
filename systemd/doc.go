// Package systemd runs a server built on the handoff library under
// systemd: `systemctl reload` upgrades it live and fails when the upgrade
// rolls back, the unit stays active with MainPID following the process
// that serves, socket activation hands the listeners in, and systemd's
// file descriptor store can keep the listeners and every connection so
// that clients keep their TCP connections across a crash.
//
// Minimal use:
//
//	up, err := handoff.New(handoff.Options{
//		Supervisor: systemd.New(systemd.Options{}),
//		// ...
//	})
//
// with, in the unit (systemd/README.md has a template):
//
//	Type=notify
//	NotifyAccess=all
//	ExecReload=/usr/local/bin/handoffctl upgrade -socket /run/NAME/control
//
// What systemd is told, and when (sd_notify(3)):
//
//   - A process that serves, first or after taking over: MAINPID=<its
//     pid>, READY=1, STATUS=. A process that took over then waits for
//     systemd to have read it (BARRIER=1) before the old process may exit,
//     or systemd would take the old process's exit for the service's end.
//   - The old process, as an upgrade starts: RELOADING=1 (with
//     MONOTONIC_USEC=); as it commits: MAINPID=<new pid>; after a
//     rollback: READY=1 and a STATUS= line that says why.
//   - A process that stops: STOPPING=1.
//   - With WatchdogSec=, WATCHDOG=1 at half the interval from the process
//     that serves, including one that took over (WATCHDOG_PID still names
//     the first process there, and go-systemd's check would turn the
//     watchdog off; see Supervisor.Notify).
//
// Sockets systemd passes ($LISTEN_FDS) are taken once, by the first
// process: handoff's Listen adopts a listening socket bound to the address
// it is asked for, and Ready resumes connections the store kept (with
// Options.KeepSockets). A process started by an upgrade gets everything
// from the old one.
//
// Fds: every socket this package opens is close-on-exec. The store holds
// a duplicate of each kept socket, named "handoff-l-" or "handoff-c-",
// the socket's inode number and its kind; the process's own copy stays
// the application's.
package systemd
