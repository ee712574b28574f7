package handoff

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// The phases of an upgrade, in their order, as the old process sees them.
// Each has one name, the same everywhere: Event.Phase, UpgradeStats's
// fields (capitalized), the log, the handoff_upgrade_phase_seconds label
// (package metrics), the control socket's phase lines and phases_ns, and
// handoffctl. A phase is named for what it does or, where a frame of the
// new process's ends it, for what that frame says (HELLO: connected,
// READY: ready).
const (
	PhaseStarted   = "started"   // the new process started; an Event only (Connected includes it)
	PhaseConnected = "connected" // from the upgrade's start to the new process's HELLO
	PhaseFds       = "fds"       // every running connection's fd sent and adopted, before the park
	PhasePrecopy   = "precopy"   // Options.Precopy: the bulk of the state sent and loaded, before the park
	PhasePark      = "park"      // from asking every connection to park to all parked
	PhaseParked    = "parked"    // the parked connections' unread bytes and state sent (and late fds)
	PhaseState     = "state"     // the global state sent
	PhaseReady     = "ready"     // from the last byte sent to the new process's READY
	PhaseCommit    = "commit"    // from READY to COMMIT sent: the decision
	PhaseRelease   = "release"   // the handed-over connections' handlers told (their copies close after)
	PhaseMove      = "move"      // Rolling mode: from COMMIT to the last connection moved
	PhasePause     = "pause"     // no phase of its own: the connections not served (UpgradeStats.Pause)
	// PhaseResume is the new process's: from COMMIT to every connection
	// taken over all at once taken up by its handler (its first Next,
	// Read, Write or Park, or Resume's return). It logs it; the old
	// process's UpgradeStats do not have it.
	PhaseResume = "resume"
)

// How an upgrade ended: the Phase of its last Event, whose Took is the
// whole upgrade's, and the result label of handoff_upgrades_total.
const (
	PhaseCommitted  = "committed"
	PhaseRolledBack = "rolled_back"
)

// Phases lists the phases UpgradeStats times, in their order, Pause last.
var Phases = []string{PhaseConnected, PhaseFds, PhasePrecopy, PhasePark, PhaseParked, PhaseState, PhaseReady,
	PhaseCommit, PhaseRelease, PhaseMove, PhasePause}

// UpgradeStats times the phases of the last upgrade, as the old process saw
// them; each field is the phase of its name (the Phase constants). Conns
// counts, in Rolling mode, the connections moved after the commit: in the
// new process (Status().TakenOver) it grows as they arrive. The
// connections are paused from the start of Park to the end of Commit: the
// new process resumes them as COMMIT arrives. Fds and Precopy, before the
// park, cost the clients nothing.
type UpgradeStats struct {
	Conns     int           // connections handed over (Rolling: moved)
	Early     int           // of them, sent before the park (the others were accepted since)
	Connected time.Duration // from the upgrade's start to the new process's HELLO
	Fds       time.Duration // sending every running connection's fd until the new process had adopted it
	Park      time.Duration // from asking to park to all parked
	Parked    time.Duration // sending the parked connections' unread bytes and state (and late fds)
	State     time.Duration // sending the global state
	Ready     time.Duration // from the last byte sent to the new process's READY
	Commit    time.Duration // from READY to COMMIT sent: the decision
	Release   time.Duration // telling the handlers of the connections handed over; their copies close after

	// Options.Precopy, in AllAtOnce mode: before the park, the bulk of
	// the state moves. 0 without a pre-copy (none set, or the new process
	// declined it); with one, State times SaveChanges. The new process's
	// Status().TakenOver has neither: COMMIT does not carry them.
	Precopy      time.Duration // from Precopy.Save's start to the new process's word that Precopy.Load returned
	PrecopyBytes uint64        // the bytes Precopy.Save wrote

	// Rolling mode: after the commit, the connections move one by one.
	Mode    Mode          // the upgrade's mode
	Move    time.Duration // from COMMIT to the last connection moved (or the deadline)
	MaxWait time.Duration // the longest a connection waited, parked, until the new process had taken it up
	Stayed  int           // connections left to drain here at the deadline
	Closed  int           // connections closed at the deadline
}

// Pause is how long the connections were not served. Only AllAtOnce
// pauses them all: in Rolling mode each waits MaxWait at most, for its own
// move, and in ListenersOnly mode none moves; Pause is 0 for both.
func (s UpgradeStats) Pause() time.Duration {
	if !s.Mode.pausesAll() {
		return 0
	}
	return s.Park + s.Parked + s.State + s.Ready + s.Commit
}

// Took returns how long the phase named phase (one of Phases) took, and 0
// for a name that is not among them.
func (s UpgradeStats) Took(phase string) time.Duration {
	switch phase {
	case PhaseConnected:
		return s.Connected
	case PhaseFds:
		return s.Fds
	case PhasePrecopy:
		return s.Precopy
	case PhasePark:
		return s.Park
	case PhaseParked:
		return s.Parked
	case PhaseState:
		return s.State
	case PhaseReady:
		return s.Ready
	case PhaseCommit:
		return s.Commit
	case PhaseRelease:
		return s.Release
	case PhaseMove:
		return s.Move
	case PhasePause:
		return s.Pause()
	}
	return 0
}

// Status is what an operator asks a process: who it is, where its chain of
// upgrades stands, what it serves, and how its last upgrade went.
type Status struct {
	PID        int
	Version    string
	Phase      string    // the process's: ProcessStarting, ProcessServing, and so on
	Generation uint64    // upgrades the chain has committed before this process served
	ChainStart time.Time // when the chain's first process started
	Start      time.Time // when this process started (New)
	Conns      map[string]int
	Totals     Totals
	Last       *UpgradeResult // this process's last upgrade; nil before one
	// TakenOver is the upgrade that started this process, as the old one
	// timed it (in Rolling mode with the moves counted here as they
	// come); nil in a first process.
	TakenOver *UpgradeResult
}

// The phases of a process, as Status.Phase names them: the control
// socket's status says them, and /ready of package metrics gives them as
// its reason.
const (
	ProcessStarting   = "starting"    // Ready has not returned
	ProcessServing    = "serving"     // Serving is true
	ProcessUpgrading  = "upgrading"   // handing over, or rolling back
	ProcessHandedOver = "handed-over" // a successor serves; this process exits soon
	ProcessStopped    = "stopped"     // Stop was called, or the takeover failed
)

// Totals count the upgrades of the whole chain: a new process starts from
// its old process's values, so that they never go back at an upgrade.
type Totals struct {
	Committed       uint64
	RolledBack      map[string]uint64 // by Cause
	ConnsHandedOver uint64
}

// UpgradeResult is how an upgrade ended.
type UpgradeResult struct {
	Committed bool
	// From is the old process's pid: this one, or in TakenOver the one
	// that started it (a peer's: as its HELLO said, in its own PID
	// namespace).
	From  int
	Err   error  // why it rolled back; nil if it committed
	Cause string // a short name for Err, see Cause
	// To is the new process's pid as this process sees it: 0 if none
	// started, or for a peer in another PID namespace (a container of
	// the pod, whose SO_PEERCRED shows no pid here).
	To         int
	Binary     string
	Began      time.Time
	Took       time.Duration
	StateBytes uint64
	Stats      UpgradeStats
}

// Event is one phase of an upgrade, as it ends, in the old process.
type Event struct {
	// Phase is the phase's name: PhaseStarted, PhaseConnected, PhaseFds,
	// PhasePrecopy (with Options.Precopy, if the new process took it),
	// PhasePark, PhaseParked, PhaseState, PhaseReady, PhaseMove (Rolling
	// mode), then PhaseCommitted or PhaseRolledBack, the last.
	Phase string
	Took  time.Duration // the phase's own time; the last event's: the whole upgrade's
	PID   int           // the new process
	Conns int           // connections concerned, where it applies
	Bytes uint64        // state bytes, where it applies
	Err   error         // rolled_back: why
}

// Causes of a rollback, as UpgradeResult.Cause names them: few and stable,
// for metrics labels.
const (
	CauseStart        = "start"         // the binary could not be started
	CauseExited       = "exited"        // the new process exited
	CauseTimeout      = "timeout"       // Options.UpgradeTimeout, or the caller's deadline
	CausePauseTimeout = "pause_timeout" // Options.PauseTimeout
	CauseParkTimeout  = "park_timeout"  // Options.ParkTimeout: a connection reached no message boundary
	CauseRejected     = "rejected"      // the new process refused (its LoadState, say)
	CauseOtherApp     = "other_app"     // the new binary is another application (Options.App)
	CauseProtocol     = "protocol"      // a malformed or unexpected frame
	CauseStopped      = "stopped"       // Stop was called
	CauseRefused      = "refused"       // not started: another runs, not ready, stopped
	CauseOther        = "other"
)

// causeOf names the kind of err for metrics.
func causeOf(err error) string {
	switch {
	case errors.Is(err, ErrUpgradeInProgress), errors.Is(err, ErrNotReady), errors.Is(err, ErrStopped),
		errors.Is(err, ErrHandedOver), errors.Is(err, ErrNotSupported), errors.Is(err, errNotNow):
		return CauseRefused
	case errors.Is(err, errStopping):
		return CauseStopped
	case errors.Is(err, errPauseTimeout):
		return CausePauseTimeout
	case errors.Is(err, errParkTimeout):
		return CauseParkTimeout
	case errors.Is(err, errTimeout):
		return CauseTimeout
	case errors.Is(err, errStart):
		return CauseStart
	case errors.Is(err, errExited):
		return CauseExited
	case errors.Is(err, errOtherApp):
		return CauseOtherApp
	case errors.Is(err, ErrRejected):
		return CauseRejected
	case errors.Is(err, ErrProtocol):
		return CauseProtocol
	}
	return CauseOther
}

// Notice is what a process tells its Supervisor.
type Notice struct {
	Event NoticeEvent
	// Status is the process as Status reports it when the notice is sent.
	Status Status
	// From is, for NoticeServing in a process started by an upgrade, the
	// pid of the old process; 0 in a first process.
	From int
	// To is, for NoticeCommitting, the pid of the process taking over.
	To int
	// Result is, for NoticeRolledBack, how the upgrade ended.
	Result *UpgradeResult
}

// NoticeEvent is a moment of a process's life.
type NoticeEvent int

const (
	// NoticeServing: Ready has made this process the one that serves: a
	// first process, or one that took over (sent after the old process
	// committed, before it is told that this one serves, so before it
	// exits).
	NoticeServing NoticeEvent = iota + 1
	// NoticeUpgrading: this process has started an upgrade.
	NoticeUpgrading
	// NoticeCommitting: this process has decided to hand everything to
	// Notice.To and is about to tell it so; it exits soon after.
	NoticeCommitting
	// NoticeRolledBack: the upgrade failed; this process serves on.
	NoticeRolledBack
	// NoticeStopping: Stop was called on a process that serves.
	NoticeStopping
	// NoticeStatus: nothing happened, but Status has moved on (its
	// connections, say); sent every StatusInterval while the process
	// serves.
	NoticeStatus
)

// StatusInterval is how often a serving process sends NoticeStatus.
const StatusInterval = 10 * time.Second

func (e NoticeEvent) String() string {
	switch e {
	case NoticeServing:
		return "serving"
	case NoticeUpgrading:
		return "upgrading"
	case NoticeCommitting:
		return "committing"
	case NoticeRolledBack:
		return PhaseRolledBack
	case NoticeStopping:
		return "stopping"
	case NoticeStatus:
		return "status"
	}
	return "unknown"
}

// Supervisor is the service manager a process runs under, as the Upgrader
// sees it: the Upgrader tells it where the process stands, adopts the
// sockets it passed at start, and may ask it to keep a copy of every socket
// so that the sockets outlive a crash of the process. Package
// github.com/handoff-dev/handoff/systemd implements it for systemd.
//
// The Upgrader calls every method from whatever goroutine an event happens
// on (Keep from the accepting one, Release from the closing one); they must
// be safe for concurrent use and return quickly. None of them may call the
// Upgrader back but for Status.
type Supervisor interface {
	// Sockets returns what the supervisor passed this process at start:
	// listening sockets (socket activation, or kept by Keep before a crash)
	// and connections kept by Keep. New calls it once, in a first process
	// only: a process started by an upgrade gets its sockets from the old
	// process. The Upgrader owns the files from then on.
	Sockets() ([]SupervisedSocket, error)
	// Keep asks the supervisor to hold a copy of a socket this process has
	// just made (a listener) or accepted (a connection), under a name
	// derived from the socket itself and kind, so that every process of
	// the chain derives the same one. The fd behind s is borrowed for the
	// call only. An error is logged and the socket is served anyway.
	Keep(s syscall.RawConn, kind string, listening bool) error
	// Release drops the supervisor's copy of a socket the application is
	// closing. It is called before this process's copy is closed: while
	// the supervisor holds one, closing ours closes nothing for the peer.
	// A socket handed to the next process is not released.
	Release(s syscall.RawConn, kind string, listening bool) error
	// Notify tells the supervisor what the process is doing.
	Notify(n Notice)
}

// SupervisedSocket is a socket a supervisor passed at start.
type SupervisedSocket struct {
	File      *os.File
	Listening bool
	// Kind is the kind given to Keep for a socket kept by this library:
	// Listen's "network addr" key for a listener, the Conn's kind for a
	// connection. Empty for a socket the supervisor made (socket
	// activation): Listen adopts those by address.
	Kind string
}
