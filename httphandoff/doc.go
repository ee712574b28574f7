// Package httphandoff serves an unmodified net/http server on a
// handoff.Listener so that, at an upgrade, its keep-alive connections move
// to the new process instead of being closed: no FIN, reset, empty reply
// or error status reaches a client because of an upgrade.
//
//	hs := httphandoff.New(srv) // srv is an *http.Server with its handlers
//	up, err := handoff.New(handoff.Options{Resume: hs.Resume /* ... */})
//	ln, err := up.Listen("tcp", addr)
//	err = up.Ready(ctx)
//	go hs.Serve(ln)
//	<-up.Exit() // handed over: every connection now belongs to the new process
//	up.Exiting() // a stop that reached this process is passed on before it exits
//
// How a connection leaves. net/http keeps no state of a connection between
// requests but the bytes its bufio reader read ahead, and there are two
// moments at which that is at most 3 bytes and nothing is half-parsed:
// while it waits for the next request of a keep-alive connection (the
// Read behind Peek(4), in StateIdle), and before the first byte of a new
// connection. At such a moment, with an upgrade waiting, the connection's
// Read gives the read-ahead bytes back to the handoff.Conn (which it
// knows: they are the last ones it returned, and bufio asks for its
// buffer's size minus what it holds) and returns a timeout; net/http takes
// that for a quiet client and closes the connection without writing, and
// Close keeps the fd, which is parked and handed over. A connection with a
// request in flight (a handler running, a body being read or discarded, a
// request head arriving) finishes it here and leaves at its next idle
// moment. In the new process, Resume queues the connection for the
// http.Server's next Accept: it is served as if just accepted, its bytes
// first. If the upgrade rolls back, it is served again here the same way.
//
// This relies on the order in which net/http (Go 1.26) calls ConnState,
// SetReadDeadline and Read; TestNetHTTPAssumptions pins it, and fails
// loudly on a Go whose net/http behaves otherwise.
//
// Limits:
//
//   - With handoff's default AllAtOnce mode, every connection must reach
//     its moment within Options.ParkTimeout, or the upgrade rolls back
//     (nothing is lost), and clients of connections that left first wait
//     for the slowest in-flight request. With Options.Mode handoff.Rolling
//     (an HTTP server shares no state that must move atomically), each
//     connection moves as soon as it is idle and is served by the new
//     process at once; a slow request delays only its own connection, and
//     one still running at Options.MoveTimeout is drained or closed as
//     Options.Stragglers says.
//   - TLS and HTTP/2 connections cannot leave (the TLS record state does
//     not move, and HTTP/2 is never idle in this sense). Serve them with
//     handoff's ListenersOnly mode and drain them.
//   - A hijacked connection (a WebSocket) is the application's, and from
//     the hijack on the library asks it to park as any handoff.Conn: take
//     it with Conn(nc), give back with Unread what the hijack's
//     bufio.Reader holds, read messages with Next, and at handoff.ErrPark
//     call Park with a non-empty state at a message boundary. In the new
//     process, Options.Resume gets that state: pass the connection to
//     Server.Resume when IsHTTP(state), and serve it with your protocol
//     otherwise. TestHijackedConnection does exactly this.
//
// A connection's idle deadline (http.Server.IdleTimeout) moves with it:
// until its next request begins, the new process keeps the deadline the old
// one had set, so a client idle across upgrades times out as it would have
// without them.
package httphandoff
