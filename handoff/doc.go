// Package handoff upgrades a running server to a new binary while its
// clients stay connected. The old process passes its listening sockets, its
// established connections (with the bytes it has read but not consumed),
// each connection's handler state and its global state to the new binary;
// the new binary carries on.
//
// The old process starts the new binary itself, with its own arguments, and
// gives it a SOCK_SEQPACKET socketpair and its listening sockets. Over the
// socketpair go established connections as fds (SCM_RIGHTS, up to 253 per
// message, in acknowledged windows) and the state, as described in
// PROTOCOL.md. The fds go first, while the old process still serves every
// connection, because turning them into connections is the slow part; only
// then are the connections parked and their unread bytes, their handler
// state and the global state sent. With Options.Precopy, the bulk of the
// global state goes before the park too, after the fds, and is loaded by
// the new process while the old one serves; the pause then holds only
// what changed since. Upgrader.LastUpgrade times each phase.
//
// A server embeds it as Example shows: New, Listen, Ready, an accept loop,
// a stop signal handled with Stop, and Exiting before it exits once Exit
// is closed; or in one call, Run, given a Service (Setup listens, Serve
// accepts, Save and Shutdown end it), does all of that, the wait for a
// handover or a stop and the drain of what stays. Its connection handler reads
// messages with Conn.Next and parks when asked:
//
//	for {
//		msg, err := c.Next(bufio.ScanLines)
//		if errors.Is(err, handoff.ErrPark) {
//			if c.Park(sessionState) != nil {
//				return // the new process has the connection now
//			}
//			continue // rolled back: carry on where we stopped
//		}
//		...
//	}
//
// # Transactions
//
// An upgrade has one commit point: the old process's decision once the new
// process has received every connection, loaded the state and said READY.
// Until then the old process keeps everything; if the new binary is
// missing, crashes, hangs past Options.UpgradeTimeout (or, with the
// connections parked, past Options.PauseTimeout), speaks another protocol
// version, is another application, rejects the state (or cannot load
// it: it has no LoadState) or cannot write its pid beside
// Options.PIDFile, the new process is killed with everything it started
// and every parked connection resumes where it stopped.
//
// "Everything it started" is its process group. A child it moved to a
// session of its own (setsid, as a wrapper script may do before it runs
// the server) escapes the kill and keeps what it inherited: with a
// wrapper that passed them on, the listening sockets (a Go binary that
// imports this package marks them close-on-exec in its init). The old
// process serves on, but the port stays bound after the service stops,
// and connections then queue where nobody accepts them. Under systemd the
// unit's cgroup holds the child, and the stop's cgroup kill
// (KillMode=control-group, the default) ends it; elsewhere find it (ss
// -ltnp) and kill it.
//
// The new process serves nothing before the old one has committed. After the
// commit the old process closes its copies with close(2), never
// shutdown(2), so no FIN reaches a client, and exits.
//
// # Stopping
//
// A stop signal (what an application does with it: call Stop) means "stop
// the service", at any moment of an upgrade, and exactly one process saves
// the state:
//
//   - In the old process before the commit point, the upgrade rolls back and
//     Stop returns nil: the old process owns the state and saves it.
//   - In the old process at or after the commit point, the upgrade completes
//     and Stop returns ErrHandedOver: the old process must not save (its
//     state is stale); Stop passes SIGTERM on to the new process, which
//     stops and saves. From the commit until it exits, the old process also
//     passes on every SIGTERM and SIGINT it receives itself, once: the
//     application calls Exiting just before it exits, which returns once
//     every stop received has been passed on, so that one arriving as the
//     process exits is not lost with it.
//   - In the new process, Stop (or ctx's end) before it has said READY aborts
//     the takeover: Ready fails and the old process carries on. After READY
//     the takeover completes first; then the new process owns the state.
//     In Rolling mode Stop also waits for the move to end, and for the
//     handler of every connection moved to this process to take it up
//     (Options.Resume), so that what the connections carried is in the
//     state the application saves.
//
// If the old process dies during an upgrade (SIGKILL), the new one exits
// without serving and says so; its connections were the old process's.
//
// # Pre-copy
//
// In AllAtOnce mode SaveState and LoadState run in the pause: for a large
// state (a ledger of a million accounts: 19 MB, a quarter of a second)
// they are most of it. Options.Precopy splits the state in two. After the
// fds, while every connection is still served, Precopy.Save sends the
// bulk and the new process loads it (Precopy.Load); the old process parks
// nothing until the load has returned. From the moment Save reads the
// state, the application tracks what it changes; in the pause,
// Precopy.SaveChanges sends only that, and Precopy.LoadChanges applies it
// on the bulk, in place of SaveState and LoadState. The phase is
// PhasePrecopy (UpgradeStats.Precopy), outside the pause. A new process
// without Precopy declines it and the upgrade runs as without one; a new
// binary of a release before the pre-copy refuses it, and the upgrade
// rolls back.
//
// # Rolling
//
// In Rolling mode (Options.Mode) nothing is paused for everyone: the new
// process gets the listeners and a snapshot of the state (SaveState runs
// while the connections are served, so it must lock what it reads), and
// serves new connections from the commit on. Then each established
// connection parks at its own next boundary and moves alone; the new
// process resumes it at once, while the old one serves those not moved
// yet. A request in flight delays only its own connection. Options.
// MoveTimeout bounds the move; Options.Stragglers drains or closes what
// is left. Upgrade returns once the move is over. If the new process dies
// during the move, the old one takes the listeners back and serves on
// with what it still holds; the connections that had moved are lost, as
// in any crash of the process serving them. Use it where connections share
// no state that must move with them atomically (package httphandoff).
//
// A stop during the move waits for the move to end (see Stopping). A stop
// that reaches the old process (as a service manager's stop of the whole
// service does) hurries the move: every connection is asked to park at
// once, and what has not parked a ParkTimeout later is left to
// Stragglers. A stop that reaches the new process alone cannot hurry it:
// a connection whose handler cannot reach a message boundary, such as one
// blocked writing to a client that does not read, then holds the stop up
// to MoveTimeout. Give handlers a write deadline, and keep MoveTimeout
// below the service manager's stop timeout (systemd's TimeoutStopSec).
//
// # Listeners only
//
// In ListenersOnly mode (Options.Mode) an upgrade does what tableflip-style libraries
// do: the new process inherits the listeners and nothing else. The old
// process parks nothing and calls neither SaveState nor LoadState; once the
// new process is ready it closes its listeners, Exit is closed, and the
// connections it had are still its own, running. The application drains
// them (Upgrader.Drain waits until they are closed) and closes what is left
// (Upgrader.Conns lists them) before it exits; their clients reconnect to
// the new process. State reaches the new process only
// through the application's own means, such as a snapshot file.
//
// # Triggers
//
// SIGHUP (unless Options.NoSignal) and Upgrader.Upgrade. A second trigger
// while one runs is refused with ErrUpgradeInProgress and a log line; one
// before Ready with ErrNotReady. The binary started is Options.Binary, by
// default the path this process was started from, looked up again each
// time: replacing the file in place and switching a "current" symlink both
// work. It runs with this process's arguments, environment and working
// directory (the one New saw).
//
// A process started by an upgrade catches SIGHUP from its package
// initialization on, so that a second reload in its first moments does not
// kill it (SIGHUP's default action). What remains is the Go runtime's own
// start, before any package's init; reloads are best sent to the pid in
// the PID file, which names the new process only once it has committed.
//
// # Another application
//
// The new process says its Options.App in HELLO, by default the import
// path of its main package, and the old process refuses a new binary of
// another application: a deployment that puts the wrong program behind
// the "current" symlink rolls back (cause CauseOtherApp) with a reason
// naming both, rather than hand the clients and the state to a program
// that cannot serve them. Binaries of one application built from
// different main packages set the same App. To switch a service to
// another application on purpose, name it for that one upgrade:
// UpgradeRequest.App, or handoffctl upgrade -app NAME.
//
// # Takeover by a peer
//
// With Options.TakeoverSocket, a process this one did not start takes
// over from it: another container of a pod, started from a new image
// while this one serves (kubernetes/README.md). New connects to the
// socket; if a process serves there, this one takes over from it as an
// exec'd process does (HasParent is true, Ready commits or fails);
// otherwise it is the first and serves the socket for the next one. The
// old process cannot signal a peer: it refuses a failed one with ABORT,
// and the peer exits by itself; after a peer's commit a stop sent to the
// old process is its own. TakeoverFromEnv reads the settings from
// HANDOFF_TAKEOVER_* variables. PROTOCOL.md, "Peer transport", says what
// passes. Each process keeps a control socket of its own (CONTROL.md): the
// old one answers handed-over on it after the handover, for the probes of
// an idle container.
//
// # Operations
//
// The serving process's pid changes at every upgrade: send reloads and
// stops to the pid in Options.PIDFile, which changes only when an upgrade
// commits. Under a service manager, set Options.Supervisor: with
// package github.com/handoff-dev/handoff/systemd, systemd follows the
// serving process (MAINPID=, READY=1), `systemctl reload` running
// `handoffctl upgrade` upgrades and fails when the upgrade rolls back,
// socket-activated listeners are adopted, and the fd store can keep every
// connection across a crash (../systemd/README.md).
//
// # Platforms
//
// Upgrades need Linux (SOCK_SEQPACKET, SO_PEERCRED, process groups). On
// other systems New, Listen, Wrap, Ready, Conns and Stop work as in a first
// process, and Upgrade returns ErrNotSupported.
package handoff
