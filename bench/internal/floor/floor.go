// Package floor measures what moving N connections from one process to
// another costs on this machine at the least, with nothing else in the
// way: interrupt N readers blocked in Read, pass the N fds over a Unix
// socket in full batches, and turn each received fd into a net.Conn (the
// fd floor); then send N parked records and resume N readers in the
// receiver (with the interrupt, the pause floor). The upgrade benchmark
// reports its own times as ratios to these, so that the distance to the
// physical limit reads the same on any machine (shared/LIMITS.md measured
// these costs once, by hand).
//
// It takes three processes, because at 15k connections the two ends of
// every connection plus the received copies do not fit under one
// process's 20000 fds: a peer holds the client ends, a sender the server
// ends with one reader goroutine each, and a receiver takes them over.
// All three are this executable started again (see Main).
package floor

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"time"
)

// Result is one measurement.
type Result struct {
	Conns     int           `json:"conns"`
	Interrupt time.Duration `json:"interrupt_ns"` // deadline on every conn until every reader returned
	Pass      time.Duration `json:"pass_ns"`      // first fd sent until the last batch was converted and acknowledged
	Convert   time.Duration `json:"convert_ns"`   // of Pass, the receiver's time in net.FileConn
	// Resume is what an all-at-once pause holds at the least once the fds
	// have gone: from the first parked record sent (RecordBytes each) to
	// every reader in the receiver, each waiting on a goroutine of its own
	// as the library's do, woken, given its record and back in Read.
	Resume time.Duration `json:"resume_ns"`
}

// RecordBytes is the size of each parked record the floor sends: a
// connection's id, a few unread bytes and a small session, about what the
// pdf server's parked connections carry.
const RecordBytes = 64

// Floor is the fd floor: interrupt, then pass and convert.
func (r Result) Floor() time.Duration { return r.Interrupt + r.Pass }

// PauseFloor is the floor of an all-at-once pause whose fds went before
// it: interrupt every reader, send every parked record, resume every
// reader in the new process.
func (r Result) PauseFloor() time.Duration { return r.Interrupt + r.Resume }

// Measure measures n connections reps times, each time with fresh
// processes, and returns the run with the median floor. self is this
// executable, whose main must hand the roles of Main to it.
func Measure(self string, n, reps int) (Result, error) {
	var all []Result
	for range reps {
		r, err := measureOnce(self, n)
		if err != nil {
			return Result{}, err
		}
		all = append(all, r)
	}
	slices.SortFunc(all, func(a, b Result) int { return int(a.Floor() - b.Floor()) })
	return all[len(all)/2], nil
}

func measureOnce(self string, n int) (Result, error) {
	cmd := exec.Command(self, RoleSender, "-n", strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return Result{}, fmt.Errorf("floor: sender of %d conns: %w", n, err)
	}
	var r Result
	if err := json.Unmarshal(out, &r); err != nil {
		return Result{}, fmt.Errorf("floor: sender said %q: %w", out, err)
	}
	return r, nil
}

// The roles Main plays, named by the first argument.
const (
	RoleSender   = "floor-sender"
	RolePeer     = "floor-peer"
	RoleReceiver = "floor-receiver"
)

// IsRole reports whether arg names one of the roles of Main.
func IsRole(arg string) bool {
	return arg == RoleSender || arg == RolePeer || arg == RoleReceiver
}

// Main runs one role (args[0]) with its flags and returns the exit code.
func Main(args []string) int {
	var err error
	switch args[0] {
	case RoleSender:
		err = sender(args[1:])
	case RolePeer:
		err = peer(args[1:])
	case RoleReceiver:
		err = receiver(args[1:])
	default:
		err = fmt.Errorf("floor: no role %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// started is a child process that said "ready" on stdout; closing its
// stdin tells it to exit.
type started struct {
	cmd *exec.Cmd
	in  interface{ Close() error }
	out *bufio.Reader
}

func start(cmd *exec.Cmd) (*started, error) {
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &started{cmd: cmd, in: in, out: bufio.NewReader(out)}
	if line, err := s.out.ReadString('\n'); line != "ready\n" {
		s.stop()
		return nil, fmt.Errorf("floor: %s did not start (%q, %v)", cmd.Args[1], line, err)
	}
	return s, nil
}

func (s *started) stop() error {
	s.in.Close()
	return s.cmd.Wait()
}

// waitStdin blocks until the parent closes our stdin.
func waitStdin() {
	var b [1]byte
	for {
		if _, err := os.Stdin.Read(b[:]); err != nil {
			return
		}
	}
}
