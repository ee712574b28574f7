package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/handoff-dev/handoff/handoff"
)

// waitPoll is how often wait asks the server again; a variable for the
// tests.
var waitPoll = 200 * time.Millisecond

// defaultWaitTimeout is wait's bound without -timeout: past the library's
// default bound on a takeover (handoff.DefaultUpgradeTimeout), with time
// for the process to start.
const defaultWaitTimeout = time.Minute

// runWait blocks until the server serves: an orchestrator's hook that must
// not return before a new container's takeover committed (OpenKruise's
// SidecarSet runs its postStart hook, then resets the old container). It
// asks the status again until the phase is serving, or handed-over (the
// process served and handed over, or idles by design, as the SidecarSet's
// empty image, which gets the same hook: it will never serve, and has
// nothing to wait for), and exits 0. A stopped process fails at once:
// its takeover failed. A socket not there yet, or not answering, is asked
// again: the hook may run before the process has opened it. Past -timeout
// it fails with what it saw last.
func runWait(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "serving" {
		return usageError(stderr, "wait takes serving first")
	}
	fs := newFlagSet("handoffctl wait serving", stderr)
	socket := fs.String("socket", "", "control socket `path`")
	pidfile := fs.String("pidfile", "", "pid `file` of the server")
	timeout := fs.Duration("timeout", defaultWaitTimeout, "give up after `duration`")
	if err := fs.Parse(args[1:]); err != nil {
		return parseStatus(err, stderr)
	}
	if fs.NArg() != 0 || (*socket == "") == (*pidfile == "") || *timeout <= 0 {
		return usageError(stderr, "wait serving takes one of -socket and -pidfile, a positive -timeout, and no other arguments")
	}
	deadline := time.Now().Add(*timeout)
	var seen seenStatus
	for {
		phase, pid, err := askPhase(*socket, *pidfile, time.Until(deadline))
		switch {
		case err == nil && (phase == handoff.ProcessServing || phase == handoff.ProcessHandedOver):
			fmt.Fprintf(stdout, "serving: pid %d is %s\n", pid, phase)
			return exitOK
		case err == nil && phase == handoff.ProcessStopped:
			fmt.Fprintf(stderr, "handoffctl: not serving: pid %d stopped\n", pid)
			return exitFailure
		case err == nil:
			seen = seenStatus{phase, pid}
		}
		if time.Until(deadline) <= 0 {
			return waitTimedOut(stderr, *timeout, seen, err)
		}
		time.Sleep(min(waitPoll, time.Until(deadline)))
	}
}

// seenStatus is the last status the server answered wait with.
type seenStatus struct {
	phase string
	pid   int
}

// askPhase is the server's phase and pid, asked within (at most).
func askPhase(socket, pidfile string, within time.Duration) (phase string, pid int, err error) {
	path, err := controlPath(socket, pidfile)
	if err != nil {
		return "", 0, err
	}
	st, refused, err := askStatus(path, max(within, time.Millisecond))
	switch {
	case err != nil:
		return "", 0, fmt.Errorf("%s: %w", path, err)
	case st == nil:
		return "", 0, fmt.Errorf("%s: no status (%s)", path, orUnknown(refused))
	}
	return st.Phase, st.PID, nil
}

// waitTimedOut says what wait saw last, on one line, and returns the exit
// status: 3 if the server could not be reached, 1 otherwise. A status
// the server answered stays what is said when a later ask failed. An ask
// left unanswered is the timeout itself (each ask gets what is left of
// it, which on a loaded machine may be too short for any answer); any
// other failure is added, as what happened since.
func waitTimedOut(stderr io.Writer, timeout time.Duration, seen seenStatus, err error) int {
	switch {
	case seen.phase != "" && err != nil && !errors.Is(err, errNoAnswerInTime):
		fmt.Fprintf(stderr, "handoffctl: not serving within %s: pid %d is %s (then: %v)\n", timeout, seen.pid, seen.phase, err)
	case seen.phase != "":
		fmt.Fprintf(stderr, "handoffctl: not serving within %s: pid %d is %s\n", timeout, seen.pid, seen.phase)
	default:
		fmt.Fprintf(stderr, "handoffctl: not serving within %s: %v\n", timeout, err)
		if errors.Is(err, errUnreachable) {
			return exitUnreachable
		}
	}
	return exitFailure
}
