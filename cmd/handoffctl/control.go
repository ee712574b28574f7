package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/internal/controlwire"
)

// errUnreachable: the server could not be reached, or went away before it
// answered.
var errUnreachable = errors.New("server unreachable")

// errNoAnswerInTime: the server said nothing within the bound askStatus
// was given.
var errNoAnswerInTime = errors.New("no answer")

// firstAnswerWait bounds the wait for the server's first answer line. A
// control server answers a status at once, and an upgrade's first phase
// as soon as the new process has started; a socket that says nothing by
// then speaks another protocol (an HTTP server waits for the rest of a
// request). Later lines come as the upgrade goes, which the server bounds.
var firstAnswerWait = 30 * time.Second

// answer is one JSON line of the server's (handoff/CONTROL.md), decoded
// by its type: the field of that type is set (none for a type this
// handoffctl does not know). raw is the line as it came.
type answer struct {
	Type   string
	Error  controlwire.Error
	Phase  controlwire.Phase
	Result controlwire.Result
	Status controlwire.Status

	raw []byte
}

// decodeAnswer decodes one line. A line without a type is no answer.
func decodeAnswer(line []byte) (answer, error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(line, &head); err != nil || head.Type == "" {
		return answer{}, errors.New("no type")
	}
	a := answer{Type: head.Type, raw: append([]byte(nil), line...)}
	var err error
	switch a.Type {
	case controlwire.TypeError:
		err = json.Unmarshal(line, &a.Error)
	case controlwire.TypePhase:
		err = json.Unmarshal(line, &a.Phase)
	case controlwire.TypeResult:
		err = json.Unmarshal(line, &a.Result)
	case controlwire.TypeStatus:
		err = json.Unmarshal(line, &a.Status)
	}
	return a, err
}

// request sends one command line to the control socket at path and calls
// fn with each answer line until the server closes the connection.
// Errors reaching the server, or losing it before it said anything, wrap
// errUnreachable.
func request(path, line string, fn func(answer) error) error {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnreachable, err)
	}
	defer c.Close()
	return exchange(c, line, fn)
}

// askStatus asks the control socket at path for its status. st is nil
// when the server answered an error line instead (refused says it); err,
// wrapping errUnreachable, says why it could not be asked. within > 0
// bounds the whole exchange, a server that accepts and says nothing
// included; 0 leaves request's bounds.
func askStatus(path string, within time.Duration) (st *controlwire.Status, refused string, err error) {
	dialWait := 5 * time.Second
	if within > 0 {
		dialWait = min(dialWait, within)
	}
	c, err := net.DialTimeout("unix", path, dialWait)
	var ne net.Error
	if err != nil && within > 0 && dialWait == within && errors.As(err, &ne) && ne.Timeout() {
		// The ask's own bound ran out before the dial was done: cut
		// short, as one the server had no time to answer.
		return nil, "", fmt.Errorf("%w: %w within %s", errUnreachable, errNoAnswerInTime, within)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", errUnreachable, err)
	}
	defer c.Close()
	if within > 0 {
		bound := time.AfterFunc(within, func() { _ = c.Close() })
		defer func() {
			if !bound.Stop() && st == nil && refused == "" {
				err = fmt.Errorf("%w: %w within %s", errUnreachable, errNoAnswerInTime, within)
			}
		}()
	}
	err = exchange(c, controlwire.Request{Command: controlwire.CommandStatus}.Line(), func(a answer) error {
		switch a.Type {
		case controlwire.TypeStatus:
			st = &a.Status
		case controlwire.TypeError:
			refused = a.Error.Error
		}
		return nil
	})
	return st, refused, err
}

// exchange sends line on c and reads the answers, as request says.
func exchange(c net.Conn, line string, fn func(answer) error) error {
	// A server that refuses a connection (busy) answers and closes it at
	// once, maybe before the line is sent: the write then fails (EPIPE)
	// while the answer waits to be read. So a failed write is only the
	// reason when no answer follows.
	_ = c.SetDeadline(time.Now().Add(firstAnswerWait))
	_, sendErr := io.WriteString(c, line+"\n")
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		a, err := decodeAnswer(sc.Bytes())
		if err != nil {
			return fmt.Errorf("%w: is it a handoff control socket? it answered %.80q", errUnreachable, sc.Text())
		}
		if n++; n == 1 {
			_ = c.SetDeadline(time.Time{})
		}
		if err := fn(a); err != nil {
			return err
		}
	}
	if n > 0 {
		// The server closes after its answer, which may reset the
		// connection if it did not read all we sent: what came is the
		// answer.
		return nil
	}
	if sendErr != nil {
		return fmt.Errorf("%w: send: %w", errUnreachable, sendErr)
	}
	if err := sc.Err(); errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: no answer in %s: is it a handoff control socket?", errUnreachable, firstAnswerWait)
	} else if err != nil {
		return fmt.Errorf("%w: no answer: %w", errUnreachable, err)
	}
	return fmt.Errorf("%w: no answer", errUnreachable)
}

// socketOf finds the control socket of the process whose pid the file at
// pidfile holds: the listening Unix socket with a path among its open fds
// (from /proc/PID/fd and /proc/net/unix). It fails unless there is
// exactly one.
func socketOf(pidfile string) (string, error) {
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errUnreachable, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return "", fmt.Errorf("%w: pid file %s: %q is not a pid", errUnreachable, pidfile, b)
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("%w: process %d: %w", errUnreachable, pid, err)
	}
	inodes := map[string]bool{}
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		if in, ok := strings.CutPrefix(target, "socket:["); ok {
			inodes[strings.TrimSuffix(in, "]")] = true
		}
	}
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		return "", fmt.Errorf("%w: %w", errUnreachable, err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path
		fl := strings.Fields(sc.Text())
		if len(fl) < 8 || !inodes[fl[6]] || !strings.HasPrefix(fl[7], "/") {
			continue
		}
		flags, _ := strconv.ParseUint(fl[3], 16, 32)
		if flags&(1<<16) != 0 && fl[4] == "0001" { // __SO_ACCEPTCON, SOCK_STREAM: listening
			found = append(found, fl[7])
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("%w: process %d has no listening Unix socket: is it started with a control socket?", errUnreachable, pid)
	}
	return "", fmt.Errorf("%w: process %d listens on several Unix sockets (%s): use -socket", errUnreachable, pid, strings.Join(found, ", "))
}

func ns(n int64) time.Duration { return time.Duration(n).Round(time.Microsecond) }
