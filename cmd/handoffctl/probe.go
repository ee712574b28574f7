package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/handoff-dev/handoff/handoff"
)

// runProbe answers an orchestrator's probe (a Kubernetes exec probe) from
// the process's own status: exit 0 if it passes, non-zero with why on
// one line if it fails.
//
// ready: the process serves, or will, or has handed over and idles. A
// Pod is ready only when all its containers are: a container taking over
// (starting) or one idle after a handover (handed-over) must not take the
// pod out of its Service while the other serves (kubernetes/README.md).
// live: the process answers and has not stopped: a stopped one can
// neither serve nor take over, and is restarted.
func runProbe(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "ready" && args[0] != "live") {
		return usageError(stderr, "probe takes ready or live first")
	}
	kind := args[0]
	fs := newFlagSet("handoffctl probe "+kind, stderr)
	socket := fs.String("socket", "", "control socket `path`")
	pidfile := fs.String("pidfile", "", "pid `file` of the server")
	if err := fs.Parse(args[1:]); err != nil {
		return parseStatus(err, stderr)
	}
	if fs.NArg() != 0 || (*socket == "") == (*pidfile == "") {
		return usageError(stderr, "probe takes one of -socket and -pidfile, and no other arguments")
	}
	path, err := controlPath(*socket, *pidfile)
	if err != nil {
		fmt.Fprintf(stderr, "handoffctl: not %s: %v\n", kind, err)
		return exitUnreachable
	}
	st, refused, err := askStatus(path, 0)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "handoffctl: not %s: %s: %v\n", kind, path, err)
		if errors.Is(err, errUnreachable) {
			return exitUnreachable
		}
		return exitFailure
	case st == nil && refused != "" && kind == "live":
		// It answered, too busy to say more: it is alive.
		fmt.Fprintf(stdout, "live: it answered: %s\n", refused)
		return exitOK
	case st == nil:
		fmt.Fprintf(stderr, "handoffctl: not %s: %s: no status (%s)\n", kind, path, orUnknown(refused))
		return exitFailure
	}
	if !probePasses(kind, st.Phase) {
		fmt.Fprintf(stderr, "handoffctl: not %s: pid %d is %s\n", kind, st.PID, st.Phase)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: pid %d is %s\n", kind, st.PID, st.Phase)
	return exitOK
}

// probePasses is the probe's rule for a process in phase.
func probePasses(kind, phase string) bool {
	switch phase {
	case handoff.ProcessStarting, handoff.ProcessServing, handoff.ProcessUpgrading, handoff.ProcessHandedOver:
		return true
	case handoff.ProcessStopped:
		return false
	}
	return kind == "live" // a phase this handoffctl does not know: it answered
}
