package handoff

import (
	"fmt"
	"time"
)

// Mode is how an upgrade moves a process's connections. The old process's
// mode is the plan of an upgrade: it says it in PLAN, the first frame after
// HELLO, and the new process takes part only if it can serve what the plan
// brings (see canServe). Every difference between the modes is a method of
// Mode, below; the session code asks them and has no other branches.
//
//	                      AllAtOnce        Rolling              ListenersOnly
//	early fds (PLAN)      every conn       every conn           none
//	parked before READY   every conn       none                 none
//	state (SaveState)     all parked       a snapshot, serving  none
//	pre-copy (Precopy)    bulk serving,    none                 none
//	                      changes parked
//	after COMMIT          nothing moves    each conn moves at   conns stay and
//	                                       its own boundary     are drained
//	stop after COMMIT     passed on        passed on            not passed on
type Mode uint8

const (
	// AllAtOnce parks every connection at a message boundary, saves the
	// state while they are all parked, and hands everything over at one
	// commit. It is the default, and what a server whose connections share
	// an in-memory state needs: the state moves atomically with them.
	AllAtOnce Mode = iota
	// Rolling hands over the listeners and a snapshot of the state (if
	// Options.SaveState is set; it runs while every connection is served),
	// commits, and from then on the new process takes new connections.
	// Then each established connection parks at its own next boundary and
	// moves on its own, and the new process resumes it at once: no
	// connection waits for another. Until the last one has moved, the old
	// process serves the rest. Options.MoveTimeout bounds the move, and
	// Options.Stragglers says what happens to connections that never
	// reached a boundary. For servers whose connections share no state that
	// must move atomically: proxies, gateways, HTTP APIs (package
	// httphandoff), WebSocket fan-outs.
	//
	// If the new process dies during the move, the old one takes the
	// listeners back, resumes every connection it still holds and serves
	// on, and Upgrade returns an error: the connections that had moved die
	// with the new process, as in any crash (their clients see a reset or
	// a close and reconnect).
	Rolling
	// ListenersOnly hands over the listeners alone, as tableflip does. The
	// old process parks nothing and keeps accepting until the new process
	// is ready; then it closes its listeners and Exit is closed, but its
	// connections stay with it, running: they are never handed over, and
	// the application owns them (Upgrader.Conns lists them) and must close
	// them itself, typically after letting them drain. SaveState and
	// LoadState are not called: the new process gets no state from the old
	// one. A new process in this mode refuses connections or state.
	ListenersOnly
	modes // the number of modes
)

var modeNames = [...]string{"all-at-once", "rolling", "listeners-only"}

func (m Mode) String() string {
	if m < modes {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// The methods below are every decision that differs between the modes;
// each is named for what it decides, and the session code branches on
// nothing else. The old process asks its own mode (Options.Mode), the new
// process the plan's, except where it checks what it can serve itself.
//
//	method               decides                                   true for
//	sendsEarlyFds        PLAN counts fds that go before the park   AllAtOnce, Rolling
//	servesConns          a process takes connections it is given   AllAtOnce, Rolling
//	keepsConns           the old process keeps its connections     ListenersOnly
//	parksBeforeReady     every connection parks before READY       AllAtOnce
//	pausesAll            UpgradeStats.Pause counts                 AllAtOnce
//	movesAfterCommit     connections move one by one after COMMIT  Rolling
//	sendsState           SaveState runs, PLAN announces the state  AllAtOnce, Rolling
//	loadsState           LoadState runs, the state may be refused  AllAtOnce, Rolling
//	precopies            Options.Precopy is offered in PLAN        AllAtOnce
//	passesStop           a stop after COMMIT goes to the successor AllAtOnce, Rolling

// sendsEarlyFds: the old process sends every running connection's fd
// before the park, and PLAN says how many.
func (m Mode) sendsEarlyFds() bool { return m != ListenersOnly }

// servesConns: a process in this mode takes connections it is handed (by
// an upgrade, or kept by a supervisor across a crash).
func (m Mode) servesConns() bool { return m != ListenersOnly }

// keepsConns: at the commit the old process hands over its listeners
// only, and its connections stay with it, running.
func (m Mode) keepsConns() bool { return m == ListenersOnly }

// parksBeforeReady: every connection parks before READY, and the commit
// hands them over together; otherwise FINAL names none.
func (m Mode) parksBeforeReady() bool { return m == AllAtOnce }

// pausesAll: the connections are all paused together, so UpgradeStats.Pause
// adds up the phases from the park to the commit.
func (m Mode) pausesAll() bool { return m == AllAtOnce }

// movesAfterCommit: connections move one by one after COMMIT, while the
// new process already serves: the old process rolls (move.go), and the
// new one keeps its early copies, resumes each connection as it arrives
// and receives until END.
func (m Mode) movesAfterCommit() bool { return m == Rolling }

// sendsState: SaveState runs in the old process, and PLAN says that state
// follows.
func (m Mode) sendsState() bool { return m != ListenersOnly }

// loadsState: LoadState runs in the new process; without it a process in
// this mode refuses an old process's state rather than lose it.
func (m Mode) loadsState() bool { return m != ListenersOnly }

// precopies: the old process offers to send the bulk of its state
// before the park (Options.Precopy), and only what changed in the pause.
// Rolling sends its whole state while serving already.
func (m Mode) precopies() bool { return m == AllAtOnce }

// passesStop: after the commit the new process owns the service, so a stop
// of the old process is passed on to it.
func (m Mode) passesStop() bool { return m != ListenersOnly }

// Stragglers is what Rolling mode does with the connections that have not
// reached a message boundary when Options.MoveTimeout ends the move.
type Stragglers uint8

const (
	// DrainStragglers leaves them with the old process, running, as
	// ListenersOnly leaves every connection: they are no longer asked to
	// park, Exit is closed, and the application lets them finish and closes
	// them (Upgrader.Conns lists them) before it exits.
	DrainStragglers Stragglers = iota
	// CloseStragglers closes them at the deadline; their clients see the
	// connection close.
	CloseStragglers
)

// DefaultMoveTimeout is Options.MoveTimeout's default: longer than most
// requests, shorter than a service manager's stop timeout.
const DefaultMoveTimeout = 30 * time.Second
