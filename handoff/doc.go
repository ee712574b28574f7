// Package handoff upgrades a running server to a new binary while its
// clients stay connected. The old process passes its listening sockets, its
// established connections (with the bytes it has read but not consumed),
// each connection's handler state and its global state to the new binary;
// the new binary carries on.
//
// Process lifecycle (starting the new binary, inheriting listeners, PID
// file, readiness) is github.com/cloudflare/tableflip. On top of it, a
// SOCK_SEQPACKET Unix socket between the two processes carries established
// connections as fds (SCM_RIGHTS, up to 253 per message, in acknowledged
// windows) and the state, as described in PROTOCOL.md. The fds go first,
// while the old process still serves every connection, because turning them
// into connections is the slow part; only then are the connections parked
// and their unread bytes, their handler state and the global state sent.
// Upgrader.LastUpgrade times each phase.
//
// A server embeds it like this:
//
//	up, err := handoff.New(handoff.Options{
//		SaveState: srv.Save,   // old process, all connections parked
//		LoadState: srv.Load,   // new process; an error rolls the upgrade back
//		Resume:    srv.Serve,  // new process, one goroutine per connection
//	})
//	ln, err := up.Listen("tcp", "127.0.0.1:7070")
//	if err := up.Ready(ctx); err != nil { os.Exit(1) }
//	go func() {
//		for {
//			c, err := ln.AcceptConn()
//			if err != nil { return }
//			go srv.Serve(c, nil)
//		}
//	}()
//	<-up.Exit()
//
// and its connection handler reads messages with Conn.Next and parks when
// asked:
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
// An upgrade commits only when the new process has received every
// connection, loaded the state and told tableflip it is ready. Until then
// the old process keeps everything; if the new binary is missing, crashes,
// hangs past Options.UpgradeTimeout, speaks another protocol version or
// rejects the state, every parked connection resumes where it stopped. After
// the commit the old process closes its copies with close(2), never
// shutdown(2), so no FIN reaches a client, and exits.
//
// # Listeners only
//
// With Options.ListenersOnly an upgrade does what tableflip alone does: the
// new process inherits the listeners and nothing else. The old process
// parks nothing and calls neither SaveState nor LoadState; once the new
// process is ready it closes its listeners, Exit is closed, and the
// connections it had are still its own, running. The application drains
// them and closes them (Upgrader.Conns lists them) before it exits; their
// clients reconnect to the new process. State reaches the new process only
// through the application's own means, such as a snapshot file.
//
// # Triggers
//
// SIGHUP (unless Options.NoSignal) and Upgrader.Upgrade. A second trigger
// while one runs is refused with ErrUpgradeInProgress and a log line. The
// binary started is Options.Binary, by default the path this process was
// started from, looked up again each time: replacing the file in place and
// switching a "current" symlink both work.
//
// # Operations
//
// Under systemd, use Type=notify-reload or Type=simple with
// ExecReload=/bin/kill -HUP $MAINPID, PIDFile= pointing at Options.PIDFile,
// and NotifyAccess=all if the new process notifies, since its pid changes.
//
// The handoff channel uses Linux interfaces (SO_PEERCRED, /proc).
package handoff
