package handoff

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// The control socket's limits. CONTROL.md describes the protocol.
const (
	controlMagic       = "HANDOFF-CONTROL"
	controlVersion     = "1"
	maxControlLine     = 4096            // bytes of a command, its newline included
	maxControlConns    = 8               // served at once; more are refused
	controlReadWait    = 5 * time.Second // for the command line
	controlWriteWait   = 5 * time.Second // for each answer line
	maxControlArgs     = 16
	controlRefusedWait = 100 * time.Millisecond // to tell a refused peer why
)

// errControl marks a command the control socket could not parse.
var errControl = errors.New("handoff: control")

// controlCommand is a parsed control request.
type controlCommand struct {
	name    string // status or upgrade
	binary  string // upgrade's binary=, or ""
	timeout time.Duration
	app     string // upgrade's app=, or ""
}

// parseCommand reads one request line (without its newline). Like the
// wire decoder, it never panics and allocates no more than the line it
// was given.
func parseCommand(line []byte) (controlCommand, error) {
	var cmd controlCommand
	if len(line) >= maxControlLine {
		return cmd, fmt.Errorf("%w: command longer than %d bytes", errControl, maxControlLine-1)
	}
	if bytes.IndexFunc(line, func(r rune) bool { return r < 0x20 && r != ' ' || r == 0x7f || r == 0xfffd }) >= 0 {
		return cmd, fmt.Errorf("%w: command holds control characters or is not UTF-8", errControl)
	}
	fields := strings.Fields(string(line))
	if len(fields) < 3 || fields[0] != controlMagic {
		return cmd, fmt.Errorf("%w: want %q", errControl, controlMagic+" "+controlVersion+" COMMAND [KEY=VALUE ...]")
	}
	if fields[1] != controlVersion {
		return cmd, fmt.Errorf("%w: protocol version %.16q, want %s", errControl, fields[1], controlVersion)
	}
	cmd.name = fields[2]
	args := fields[3:]
	if len(args) > maxControlArgs {
		return cmd, fmt.Errorf("%w: more than %d arguments", errControl, maxControlArgs)
	}
	switch cmd.name {
	case "status":
		if len(args) > 0 {
			return cmd, fmt.Errorf("%w: status takes no arguments", errControl)
		}
		return cmd, nil
	case "upgrade":
	default:
		return cmd, fmt.Errorf("%w: unknown command %.32q", errControl, cmd.name)
	}
	seen := map[string]bool{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || v == "" {
			return cmd, fmt.Errorf("%w: argument %.32q: want KEY=VALUE", errControl, a)
		}
		if seen[k] {
			return cmd, fmt.Errorf("%w: argument %.32q given twice", errControl, k)
		}
		seen[k] = true
		switch k {
		case "binary":
			if !strings.HasPrefix(v, "/") {
				return cmd, fmt.Errorf("%w: binary %.64q: want an absolute path", errControl, v)
			}
			cmd.binary = v
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return cmd, fmt.Errorf("%w: timeout %.32q: want a positive duration such as 30s", errControl, v)
			}
			cmd.timeout = d
		case "app":
			if err := checkAppName(v); err != nil {
				return cmd, fmt.Errorf("%w: app: %w", errControl, err)
			}
			cmd.app = v
		default:
			return cmd, fmt.Errorf("%w: unknown argument %.32q", errControl, k)
		}
	}
	return cmd, nil
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
	u     *Upgrader
	ln    net.Listener
	path  string
	slots chan struct{} // one per connection served
	once  sync.Once
	start chan struct{} // closed when the server may answer
	quit  chan struct{} // closed by close
}

// openControl makes the control socket at Options.ControlSocket, or takes
// the one the old process passed, before any other listener is inherited
// and unused ones are closed (in Ready).
func (u *Upgrader) openControl() error {
	path := u.opts.ControlSocket
	if path == "" {
		return nil
	}
	ln, err := u.listenControl(path)
	if err != nil {
		return fmt.Errorf("handoff: control socket %s: %w", path, err)
	}
	u.ctl = &controlServer{u: u, ln: ln, path: path, slots: make(chan struct{}, maxControlConns),
		start: make(chan struct{}), quit: make(chan struct{})}
	go u.ctl.serve()
	if u.parent == nil {
		u.ctl.open()
	}
	return nil
}

// open lets the server answer.
func (s *controlServer) open() {
	if s == nil {
		return
	}
	select {
	case <-s.start:
	default:
		close(s.start)
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
					s.u.log.Warn("handoff: control socket: accept failed; not serving it any more", "err", err)
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
			_ = c.SetWriteDeadline(time.Now().Add(controlRefusedWait))
			writeLine(c, controlError{Type: "error", Error: fmt.Sprintf("busy: %d control connections already", maxControlConns)})
			_ = c.Close()
		}
	}
}

// handle serves one connection; the caller closes it.
func (s *controlServer) handle(c net.Conn) {
	fail := func(err error) {
		_ = c.SetWriteDeadline(time.Now().Add(controlWriteWait))
		if writeLine(c, controlError{Type: "error", Error: err.Error()}) {
			drain(c)
		}
	}
	if err := checkControlPeer(c); err != nil {
		s.u.log.Warn("handoff: control socket: peer refused", "err", err)
		fail(err)
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(controlReadWait))
	line, err := readCommand(c)
	if err == nil {
		var cmd controlCommand
		cmd, err = parseCommand(line)
		if err == nil {
			s.run(c, cmd)
			return
		}
	}
	s.u.log.Warn("handoff: control socket: bad command", "err", err)
	fail(err)
}

func (s *controlServer) run(c net.Conn, cmd controlCommand) {
	switch cmd.name {
	case "status":
		_ = c.SetWriteDeadline(time.Now().Add(controlWriteWait))
		writeLine(c, statusMsg(s.u.Status()))
	case "upgrade":
		s.upgrade(c, cmd)
	}
}

// upgrade runs an upgrade for the peer, streaming its phases. The upgrade
// does not wait for the peer: a peer that does not read loses lines after
// a write deadline, and one that goes away does not stop the upgrade.
func (s *controlServer) upgrade(c net.Conn, cmd controlCommand) {
	events := make(chan Event, 32) // more than an upgrade has phases
	req := UpgradeRequest{Binary: cmd.binary, Timeout: cmd.timeout, App: cmd.app, Progress: func(e Event) {
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
		if e.Phase != "committed" && e.Phase != "rolled_back" {
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

// The answers' JSON objects, as CONTROL.md lists them.

type controlError struct {
	Type  string `json:"type"`
	Error string `json:"error"`
}

type controlPhase struct {
	Type   string `json:"type"`
	Phase  string `json:"phase"`
	TookNS int64  `json:"took_ns"`
	PID    int    `json:"pid,omitempty"`
	Conns  int    `json:"conns,omitempty"`
	Bytes  uint64 `json:"bytes,omitempty"`
}

func phaseMsg(e Event) controlPhase {
	return controlPhase{Type: "phase", Phase: e.Phase, TookNS: int64(e.Took), PID: e.PID, Conns: e.Conns, Bytes: e.Bytes}
}

type controlResult struct {
	Type       string           `json:"type"`
	Committed  bool             `json:"committed"`
	Refused    bool             `json:"refused"`
	Mode       string           `json:"mode,omitempty"`
	Cause      string           `json:"cause,omitempty"`
	Reason     string           `json:"reason,omitempty"`
	From       int              `json:"from"`
	To         int              `json:"to,omitempty"`
	Binary     string           `json:"binary"`
	Began      time.Time        `json:"began"`
	TookNS     int64            `json:"took_ns"`
	Conns      int              `json:"conns"`
	StateBytes uint64           `json:"state_bytes"`
	PhasesNS   map[string]int64 `json:"phases_ns"`
}

// resultMsg is r as the control socket says it; from is the old process's
// pid unless r names it.
func resultMsg(r UpgradeResult, from int) controlResult {
	if r.From != 0 {
		from = r.From
	}
	m := controlResult{Type: "result", Committed: r.Committed, Refused: r.Cause == CauseRefused, Cause: r.Cause,
		From: from, To: r.To, Binary: r.Binary, Began: r.Began, TookNS: int64(r.Took), Conns: r.Stats.Conns,
		StateBytes: r.StateBytes, PhasesNS: map[string]int64{
			"start": int64(r.Stats.Start), "fds": int64(r.Stats.Fds), "park": int64(r.Stats.Park),
			"parked": int64(r.Stats.Parked), "state": int64(r.Stats.State), "adopt": int64(r.Stats.Adopt),
			"commit": int64(r.Stats.Commit), "release": int64(r.Stats.Release), "pause": int64(r.Stats.Pause()),
		}}
	if !m.Refused { // a refused upgrade never started: it had no mode
		m.Mode = r.Stats.Mode.String()
	}
	if r.Stats.Mode.movesAfterCommit() {
		m.PhasesNS["move"] = int64(r.Stats.Move)
	}
	if r.Err != nil {
		m.Reason = r.Err.Error()
	}
	return m
}

type controlTotals struct {
	Committed       uint64            `json:"committed"`
	RolledBack      map[string]uint64 `json:"rolled_back"`
	ConnsHandedOver uint64            `json:"conns_handed_over"`
}

type controlStatus struct {
	Type          string         `json:"type"`
	PID           int            `json:"pid"`
	Version       string         `json:"version"`
	Phase         string         `json:"phase"`
	Generation    uint64         `json:"generation"`
	ChainStart    time.Time      `json:"chain_start"`
	Start         time.Time      `json:"start"`
	ChainUptimeNS int64          `json:"chain_uptime_ns"`
	UptimeNS      int64          `json:"uptime_ns"`
	Conns         map[string]int `json:"conns"`
	Totals        controlTotals  `json:"totals"`
	Last          *controlResult `json:"last"`
}

func statusMsg(st Status) controlStatus {
	m := controlStatus{Type: "status", PID: st.PID, Version: st.Version, Phase: st.Phase, Generation: st.Generation,
		ChainStart: st.ChainStart, Start: st.Start, ChainUptimeNS: int64(time.Since(st.ChainStart)),
		UptimeNS: int64(time.Since(st.Start)), Conns: st.Conns,
		Totals: controlTotals{Committed: st.Totals.Committed, RolledBack: st.Totals.RolledBack,
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
