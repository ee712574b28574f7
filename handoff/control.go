package handoff

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/internal/controlwire"
)

// The control socket's limits. CONTROL.md describes the protocol, and
// internal/control declares its messages.
const (
	maxControlLine     = 4096            // bytes of a command, its newline included
	maxControlConns    = 8               // served at once; more are refused
	controlReadWait    = 5 * time.Second // for the command line
	controlWriteWait   = 5 * time.Second // for each answer line
	maxControlArgs     = 16
	controlRefusedWait = 100 * time.Millisecond // to read what a refused peer sent
)

// errControl marks a command the control socket could not parse.
var errControl = errors.New("handoff: control")

// parseCommand reads one request line (without its newline). Like the
// wire decoder, it never panics and allocates no more than the line it
// was given.
func parseCommand(line []byte) (controlwire.Request, error) {
	var cmd controlwire.Request
	if len(line) >= maxControlLine {
		return cmd, fmt.Errorf("%w: command longer than %d bytes", errControl, maxControlLine-1)
	}
	if bytes.IndexFunc(line, func(r rune) bool { return r < 0x20 && r != ' ' || r == 0x7f || r == 0xfffd }) >= 0 {
		return cmd, fmt.Errorf("%w: command holds control characters or is not UTF-8", errControl)
	}
	fields := strings.Fields(string(line))
	if len(fields) < 3 || fields[0] != controlwire.Magic {
		return cmd, fmt.Errorf("%w: want %q", errControl, controlwire.Magic+" "+controlwire.Version+" COMMAND [KEY=VALUE ...]")
	}
	if fields[1] != controlwire.Version {
		return cmd, fmt.Errorf("%w: protocol version %.16q, want %s", errControl, fields[1], controlwire.Version)
	}
	cmd.Command = fields[2]
	args := fields[3:]
	if len(args) > maxControlArgs {
		return cmd, fmt.Errorf("%w: more than %d arguments", errControl, maxControlArgs)
	}
	switch cmd.Command {
	case controlwire.CommandStatus:
		if len(args) > 0 {
			return cmd, fmt.Errorf("%w: status takes no arguments", errControl)
		}
		return cmd, nil
	case controlwire.CommandUpgrade:
	default:
		return cmd, fmt.Errorf("%w: unknown command %.32q", errControl, cmd.Command)
	}
	return cmd, parseUpgradeArgs(&cmd, args)
}

// parseUpgradeArgs reads upgrade's KEY=VALUE arguments into cmd, each at
// most once.
func parseUpgradeArgs(cmd *controlwire.Request, args []string) error {
	seen := map[string]bool{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || v == "" {
			return fmt.Errorf("%w: argument %.32q: want KEY=VALUE", errControl, a)
		}
		if seen[k] {
			return fmt.Errorf("%w: argument %.32q given twice", errControl, k)
		}
		seen[k] = true
		switch k {
		case "binary":
			if !strings.HasPrefix(v, "/") {
				return fmt.Errorf("%w: binary %.64q: want an absolute path", errControl, v)
			}
			cmd.Binary = v
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return fmt.Errorf("%w: timeout %.32q: want a positive duration such as 30s", errControl, v)
			}
			cmd.Timeout = d
		case "app":
			if err := checkAppName(v); err != nil {
				return fmt.Errorf("%w: app: %w", errControl, err)
			}
			cmd.App = v
		default:
			return fmt.Errorf("%w: unknown argument %.32q", errControl, k)
		}
	}
	return nil
}

// readCommand reads one request line from c, at most maxControlLine bytes,
// and returns it without its newline.
func readCommand(c io.Reader) ([]byte, error) {
	buf := make([]byte, maxControlLine)
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		if i := bytes.IndexByte(buf[n:n+m], '\n'); i >= 0 {
			return buf[:n+i], nil
		}
		n += m
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, fmt.Errorf("%w: no complete command line in %s", errControl, controlReadWait)
			}
			if err == io.EOF {
				return nil, fmt.Errorf("%w: connection closed before the command's newline", errControl)
			}
			return nil, fmt.Errorf("%w: read: %w", errControl, err)
		}
	}
	return nil, fmt.Errorf("%w: command longer than %d bytes", errControl, maxControlLine-1)
}

// controlServer serves the control socket. The Upgrader owns its
// listener; accepted connections are the server's until it closes them.
type controlServer struct {
	u     controlled
	log   *slog.Logger
	ln    net.Listener
	path  string
	slots chan struct{} // one per connection served
	once  sync.Once
	start chan struct{} // closed when the server may answer
	quit  chan struct{} // closed by close
}

// controlled is the Upgrader as its control socket asks it.
type controlled interface {
	Status() Status
	UpgradeWith(ctx context.Context, req UpgradeRequest) (UpgradeResult, error)
}

// openControl makes the control socket at path, or takes the one the old
// process passed (fromOld), through listen: before any other listener
// is inherited and unused ones are closed (in Ready). It answers once
// open is called.
func openControl(u controlled, log *slog.Logger, path string, fromOld bool,
	listen func(network, addr string) (net.Listener, error)) (*controlServer, error) {
	ln, err := listenControl(path, fromOld, listen)
	if err != nil {
		return nil, fmt.Errorf("handoff: control socket %s: %w", path, err)
	}
	s := &controlServer{u: u, log: log, ln: ln, path: path, slots: make(chan struct{}, maxControlConns),
		start: make(chan struct{}), quit: make(chan struct{})}
	go s.serve()
	return s, nil
}

// open lets the server answer.
func (s *controlServer) open() {
	if s != nil {
		closeOnce(s.start)
	}
}

// close stops the server; keep leaves the socket file in place for the
// process that took it over. A server that never answered (a takeover
// that did not complete) leaves it too: the old process serves on it.
func (s *controlServer) close(keep bool) {
	if s == nil {
		return
	}
	select {
	case <-s.start:
	default:
		keep = true
	}
	s.once.Do(func() {
		close(s.quit)
		if keep {
			keepSocketFile(s.ln)
		}
		_ = s.ln.Close()
	})
}

func (s *controlServer) serve() {
	select {
	case <-s.start:
	case <-s.quit:
		return
	}
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			select {
			case <-s.quit:
			default:
				if !errors.Is(err, net.ErrClosed) {
					s.log.Warn("handoff: control socket: accept failed; not serving it any more", "err", err)
				}
			}
			return
		}
		select {
		case s.slots <- struct{}{}:
			go func() {
				s.handle(c)
				<-s.slots // before the peer sees the end: it may connect again at once
				_ = c.Close()
			}()
		default:
			// A line fits a fresh socket's buffer: the write never waits,
			// and the deadline is a safety net only. A short one passed
			// before a goroutine of a loaded process got to write, and
			// the peer saw a reset instead of why (TestBusyExitStatus).
			_ = c.SetWriteDeadline(time.Now().Add(controlWriteWait))
			writeLine(c, errorMsg(fmt.Sprintf("busy: %d control connections already", maxControlConns)))
			_ = c.Close()
		}
	}
}

// handle serves one connection; the caller closes it.
func (s *controlServer) handle(c net.Conn) {
	fail := func(err error) {
		_ = c.SetWriteDeadline(time.Now().Add(controlWriteWait))
		if writeLine(c, errorMsg(err.Error())) {
			drain(c)
		}
	}
	if err := checkControlPeer(c); err != nil {
		s.log.Warn("handoff: control socket: peer refused", "err", err)
		fail(err)
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(controlReadWait))
	line, err := readCommand(c)
	if err == nil {
		var cmd controlwire.Request
		cmd, err = parseCommand(line)
		if err == nil {
			s.run(c, cmd)
			return
		}
	}
	s.log.Warn("handoff: control socket: bad command", "err", err)
	fail(err)
}

func (s *controlServer) run(c net.Conn, cmd controlwire.Request) {
	switch cmd.Command {
	case controlwire.CommandStatus:
		_ = c.SetWriteDeadline(time.Now().Add(controlWriteWait))
		writeLine(c, statusMsg(s.u.Status()))
	case controlwire.CommandUpgrade:
		s.upgrade(c, cmd)
	}
}

// upgrade runs an upgrade for the peer, streaming its phases. The upgrade
// does not wait for the peer: a peer that does not read loses lines after
// a write deadline, and one that goes away does not stop the upgrade.
func (s *controlServer) upgrade(c net.Conn, cmd controlwire.Request) {
	events := make(chan Event, 32) // more than an upgrade has phases
	req := UpgradeRequest{Binary: cmd.Binary, Timeout: cmd.Timeout, App: cmd.App, Progress: func(e Event) {
		select {
		case events <- e:
		default:
		}
	}}
	final := make(chan UpgradeResult, 1)
	written := make(chan struct{})
	req.finish = func(r UpgradeResult) {
		final <- r
		// Exit waits for the answer, so that it leaves before the
		// process does; the write deadlines bound the wait.
		select {
		case <-written:
		case <-time.After(2 * controlWriteWait):
		}
	}
	go func() { _, _ = s.u.UpgradeWith(context.Background(), req) }()
	defer close(written)
	ok := true // the peer still reads
	send := func(v any) {
		if ok {
			_ = c.SetWriteDeadline(time.Now().Add(controlWriteWait))
			ok = writeLine(c, v)
		}
	}
	sendPhase := func(e Event) {
		if e.Phase != PhaseCommitted && e.Phase != PhaseRolledBack { // the result says them
			send(phaseMsg(e))
		}
	}
	for {
		select {
		case e := <-events:
			sendPhase(e)
		case r := <-final:
			for len(events) > 0 {
				sendPhase(<-events)
			}
			send(resultMsg(r, os.Getpid()))
			return
		}
	}
}

// drain ends a refused connection so that its peer reads the answer: on
// Linux, closing a Unix socket with unread bytes resets the peer, which
// may then lose the answer. It reads what the peer sends for a moment,
// within bounds.
func drain(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(controlRefusedWait))
	_, _ = io.CopyN(io.Discard, c, 16*maxControlLine)
}

// writeLine writes v as one JSON line and reports whether it went out.
func writeLine(w io.Writer, v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	_, err = w.Write(append(b, '\n'))
	return err == nil
}

// errorMsg refuses a request for the reason text.
func errorMsg(text string) controlwire.Error {
	return controlwire.Error{Type: controlwire.TypeError, Error: text}
}

// phaseMsg is e as the control socket says it.
func phaseMsg(e Event) controlwire.Phase {
	return controlwire.Phase{Type: controlwire.TypePhase, Phase: e.Phase, TookNS: int64(e.Took), PID: e.PID,
		Conns: e.Conns, Bytes: e.Bytes}
}

// resultMsg is r as the control socket says it; from is the old process's
// pid unless r names it.
func resultMsg(r UpgradeResult, from int) controlwire.Result {
	if r.From != 0 {
		from = r.From
	}
	m := controlwire.Result{Type: controlwire.TypeResult, Committed: r.Committed, Refused: r.Cause == CauseRefused,
		Cause: r.Cause, From: from, To: r.To, Binary: r.Binary, Began: r.Began, TookNS: int64(r.Took),
		Conns: r.Stats.Conns, StateBytes: r.StateBytes, PhasesNS: map[string]int64{}}
	for _, p := range Phases {
		switch {
		case p == PhaseMove && !r.Stats.Mode.movesAfterCommit():
		case p == PhasePrecopy && r.Stats.Precopy == 0: // none ran
		default:
			m.PhasesNS[p] = int64(r.Stats.Took(p))
		}
	}
	if !m.Refused { // a refused upgrade never started: it had no mode
		m.Mode = r.Stats.Mode.String()
	}
	if r.Err != nil {
		m.Reason = r.Err.Error()
	}
	return m
}

// statusMsg is st as the control socket says it.
func statusMsg(st Status) controlwire.Status {
	m := controlwire.Status{Type: controlwire.TypeStatus, PID: st.PID, Version: st.Version, Phase: st.Phase,
		Generation: st.Generation, ChainStart: st.ChainStart, Start: st.Start,
		ChainUptimeNS: int64(time.Since(st.ChainStart)), UptimeNS: int64(time.Since(st.Start)), Conns: st.Conns,
		Totals: controlwire.Totals{Committed: st.Totals.Committed, RolledBack: st.Totals.RolledBack,
			ConnsHandedOver: st.Totals.ConnsHandedOver}}
	// A process that has not upgraded yet says the upgrade that started
	// it: for the operator, that is the chain's last upgrade.
	last := st.Last
	if last == nil {
		last = st.TakenOver
	}
	if last != nil {
		r := resultMsg(*last, st.PID)
		m.Last = &r
	}
	return m
}

// controlDirSafe is the rule for an existing directory of the control
// socket: nobody else may write to it, unless it is sticky (others cannot
// then remove or replace our socket file) and owned by us or root.
func controlDirSafe(dir string, mode os.FileMode, owner, me int) error {
	if !mode.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if mode.Perm()&0o022 == 0 {
		return nil
	}
	if mode&os.ModeSticky != 0 && (owner == me || owner == 0) {
		return nil
	}
	return fmt.Errorf("directory %s is writable by others (%s) and not sticky and ours: use one only this user can write to", dir, mode.Perm())
}
