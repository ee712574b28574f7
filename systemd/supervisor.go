package systemd

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/handoff-dev/handoff/handoff"
)

// DefaultMaxKept is Options.MaxKept's default: adding the last one costs
// systemd 252 about 1 ms.
const DefaultMaxKept = 1000

// ErrNotSupported: the file descriptor store needs Linux.
var ErrNotSupported = errors.New("systemd: the file descriptor store is not supported on this platform")

// Options configure a Supervisor. Zero values mean the documented default.
type Options struct {
	// KeepSockets keeps every listener the process makes and every
	// connection it accepts or wraps in systemd's file descriptor store
	// (FDSTORE=1), and takes each back (FDSTOREREMOVE=1) before the
	// application closes it. When the process dies (a crash, SIGKILL, the
	// watchdog) and Restart= starts it again, Ready resumes the connections
	// the store kept: their clients keep their TCP connections. The unit
	// needs FileDescriptorStoreMax= above the listeners plus connections
	// it may hold, and NotifyAccess=all. systemd/README.md says what a
	// client sees across such a crash. Default: off.
	KeepSockets bool
	// MaxKept bounds the connections kept in the store at once; more are
	// served, but not kept, and a crash closes them. systemd 252 compares
	// each fd added with every one stored (about 1 µs each, in PID 1, which
	// answers nothing else meanwhile; README.md has the figures), so the
	// store suits hundreds to a few thousand long-lived connections, not a
	// stream of short ones. Set FileDescriptorStoreMax= to MaxKept plus the
	// listeners. Default DefaultMaxKept.
	MaxKept int
	// Logger receives what goes wrong talking to systemd. Default
	// slog.Default().
	Logger *slog.Logger
}

// Supervisor is systemd as a handoff.Upgrader's Supervisor. Outside
// systemd (no $NOTIFY_SOCKET) it tells nobody anything and keeps nothing,
// and Sockets still adopts what socket activation passed.
type Supervisor struct {
	opts   Options
	log    *slog.Logger
	socket string // $NOTIFY_SOCKET at New; empty outside systemd

	sockOnce sync.Once
	dogOnce  sync.Once
	store    *notifier // nil until the first message with fds
	storeMu  sync.Mutex

	keptMu sync.Mutex
	kept   int  // connections in the store as far as this process knows
	full   bool // said once that MaxKept was reached
}

var _ handoff.Supervisor = (*Supervisor)(nil)

// New returns the Supervisor for this process. $NOTIFY_SOCKET stays set:
// the process an upgrade starts needs it too.
func New(opts Options) *Supervisor {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxKept <= 0 {
		opts.MaxKept = DefaultMaxKept
	}
	return &Supervisor{opts: opts, log: opts.Logger, socket: os.Getenv("NOTIFY_SOCKET")}
}

// UnderSystemd reports whether the process was started by systemd with a
// notification socket.
func (s *Supervisor) UnderSystemd() bool { return s.socket != "" }

// Sockets returns the sockets systemd passed this process ($LISTEN_FDS):
// those of socket activation, and those the store kept across a crash.
// The $LISTEN_* variables are removed, so that no process this one starts
// takes them for its own.
func (s *Supervisor) Sockets() ([]handoff.SupervisedSocket, error) {
	var out []handoff.SupervisedSocket
	for _, f := range activation.Files(true) {
		listening, err := isListening(f)
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("systemd: passed fd %q: %w", f.Name(), err)
		}
		kind, kept := parseName(f.Name(), listening)
		if !kept {
			kind = ""
		}
		out = append(out, handoff.SupervisedSocket{File: f, Listening: listening, Kind: kind})
		if kept && !listening {
			s.assumeKept(1)
		}
	}
	return out, nil
}

// Keep puts a copy of the socket in the store, if Options.KeepSockets
// and, for a connection, fewer than Options.MaxKept are kept.
func (s *Supervisor) Keep(rc syscall.RawConn, kind string, listening bool) error {
	if !s.opts.KeepSockets || s.socket == "" {
		return nil
	}
	if !listening && !s.countKept(1) {
		return nil
	}
	err := s.storeOp(rc, kind, listening, true)
	if err != nil && !listening {
		s.countKept(-1)
	}
	return err
}

// Release takes the socket's copy out of the store, if Options.KeepSockets.
// It is sent for every socket, kept or not: a process cannot tell which of
// the connections it took over its predecessors kept, and a removal of a
// name the store does not hold costs systemd a string comparison per fd.
func (s *Supervisor) Release(rc syscall.RawConn, kind string, listening bool) error {
	if !s.opts.KeepSockets || s.socket == "" {
		return nil
	}
	if !listening {
		s.countKept(-1)
	}
	return s.storeOp(rc, kind, listening, false)
}

// assumeKept counts n connections kept by an earlier process.
func (s *Supervisor) assumeKept(n int) {
	s.keptMu.Lock()
	defer s.keptMu.Unlock()
	s.kept = min(s.kept+n, s.opts.MaxKept)
}

// countKept adds d to the connections kept, refusing to go past MaxKept
// (ok false) or below zero.
func (s *Supervisor) countKept(d int) (ok bool) {
	s.keptMu.Lock()
	defer s.keptMu.Unlock()
	if d > 0 && s.kept+d > s.opts.MaxKept {
		if !s.full {
			s.full = true
			s.log.Warn("systemd: MaxKept connections are kept; more are served but a crash closes them",
				"max_kept", s.opts.MaxKept)
		}
		return false
	}
	s.kept = max(s.kept+d, 0)
	if s.kept < s.opts.MaxKept*9/10 {
		s.full = false
	}
	return true
}

// Notify tells systemd what the process does, in the order systemd needs:
// see notify.go.
func (s *Supervisor) Notify(n handoff.Notice) {
	if s.socket == "" {
		return
	}
	msg := message(n, os.Getpid())
	if msg == "" {
		return
	}
	if _, err := daemon.SdNotify(false, msg); err != nil {
		s.log.Warn("systemd: notify", "event", n.Event.String(), "err", err)
	}
	if n.Event == handoff.NoticeServing {
		if r := n.Status.TakenOver; n.From != 0 && r != nil && s.opts.KeepSockets {
			// As far as this process can tell, its predecessor kept every
			// connection it handed over.
			s.assumeKept(r.Stats.Conns)
		}
		// Before the barrier, which may wait long: the old process has
		// stopped pinging, and NotifyAccess=all takes this one's pings.
		s.startWatchdog(n.From)
		if n.From != 0 {
			// The old process exits once this one says it serves: systemd
			// must have read MAINPID= by then, or it takes the old
			// process's exit for the service's.
			if err := s.barrier(2 * time.Second); err != nil {
				s.log.Warn("systemd: barrier after MAINPID=", "err", err)
			}
			if os.Getppid() == n.From { // as it is at a takeover: the old process waits for this one
				go s.reclaimMainPID(n.From)
			}
		}
	}
}

// startWatchdog pings systemd's watchdog at half its interval, once this
// process serves. WATCHDOG_PID names the process systemd started; a
// process that took over from it inherits that value, and
// daemon.SdWatchdogEnabled would then say the watchdog is not for it, and
// the pings would stop at the first upgrade until systemd killed the
// service. So a process that took over takes the variable over (its own
// successor inherits it so), whichever pid it names: its predecessor, or
// an earlier one when the predecessor started it before its own Notify
// had taken the variable over (a reload right after a reload).
func (s *Supervisor) startWatchdog(from int) {
	s.dogOnce.Do(func() {
		if from != 0 && os.Getenv("WATCHDOG_PID") != "" {
			_ = os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
		}
		every, err := daemon.SdWatchdogEnabled(false)
		if err != nil {
			s.log.Warn("systemd: watchdog", "err", err)
			return
		}
		if every == 0 {
			return
		}
		go func() {
			for range time.Tick(every / 2) {
				if _, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog); err != nil {
					s.log.Warn("systemd: watchdog ping", "err", err)
				}
			}
		}()
	})
}

// keptPrefix starts the names of the sockets this package keeps:
// "handoff-l-" (listeners) or "handoff-c-" (connections), the socket's
// inode number (the same in every process that holds the socket, and
// unique while systemd holds it), "-", and the kind, escaped.
const keptPrefix = "handoff-"

// keptName names a kept socket: see keptPrefix.
func keptName(ino uint64, kind string, listening bool) string {
	role := "c-"
	if listening {
		role = "l-"
	}
	name := keptPrefix + role + strconv.FormatUint(ino, 10) + "-" + escape(kind)
	if len(name) > 255 { // systemd's limit for FDNAME=
		name = name[:255]
	}
	return name
}

// parseName returns the kind a kept socket's name carries.
func parseName(name string, listening bool) (kind string, kept bool) {
	role := "c-"
	if listening {
		role = "l-"
	}
	rest, ok := strings.CutPrefix(name, keptPrefix+role)
	if !ok {
		return "", false
	}
	_, esc, ok := strings.Cut(rest, "-")
	if !ok {
		return "", false
	}
	kind, err := unescape(esc)
	return kind, err == nil
}

// escape keeps an FDNAME= within what systemd takes (printable ASCII, no
// ':', which separates $LISTEN_FDNAMES) and readable.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func unescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+3 > len(s) {
			return "", fmt.Errorf("systemd: bad escape in %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("systemd: bad escape in %q", s)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}
