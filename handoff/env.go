package handoff

import (
	"net"
	"os"
	"sync/atomic"
	"syscall"
)

// env is everything an Upgrader does to the operating system outside its
// sockets: who it is, what its old process passed it, the signals it
// catches and sends, and the new process it starts. Production uses
// osEnv; a test substitutes one that runs the new process's side in a
// goroutine of the test process (its own Upgrader, a real socketpair), so
// that the upgrade's phases, stops and rollbacks run in one process, as
// often as -count asks. The funcs are set once and never change.
type env struct {
	// claim is New's guard: false once this env has an Upgrader. The
	// operating system's process has one chain of upgrades (one SIGHUP,
	// one inheritance, one PID file), so only its first New succeeds.
	claim func() bool
	// fromParent is what the previous process passed (HANDOFF_FDS); nil
	// in a first process.
	fromParent func() *inheritance
	getpid     func() int
	// getppid names the old process; once it has died, another one.
	getppid func() int
	// notify and stopNotify are signal.Notify and signal.Stop for this
	// process's own signals (SIGHUP, and the stops watchStops passes on).
	notify     func(c chan<- os.Signal, sig ...os.Signal)
	stopNotify func(c chan<- os.Signal)
	// kill sends sig to pid: a stop passed on to the successor.
	kill func(pid int, sig syscall.Signal) error
	// start starts binary as the new process of u's upgrade, with the
	// other end of the returned channel and u's listeners; see
	// startProcess.
	start func(binary, dir string, lns []handedListener) (*newProcess, *net.UnixConn, error)
	// dialTakeover connects to a takeover socket (Options.TakeoverSocket).
	dialTakeover func(path string) (*net.UnixConn, error)
	// checkParent verifies that the channel's peer is the old process.
	checkParent func(c *net.UnixConn) error
	// joinGroup moves a committed new process into its old process's
	// process group.
	joinGroup func(ppid int) error
}

// newProcess is a process started by an upgrade, in a process group of
// its own until it commits, so that a failed one can be killed with
// everything it started (a shell script's children, say), none of which
// may keep this process's sockets.
type newProcess struct {
	pid    int
	exited chan struct{} // closed once it has exited and been reaped
	err    error         // how it exited; read after exited
	// sigkill kills it and everything in its process group; kill waits
	// for exited.
	sigkill func()
	killed  atomic.Bool // kill called sigkill
	// byKill, set before exited is closed, says it died of SIGKILL: kill's,
	// if killed is set, and then its end was not its own doing.
	byKill bool
}
