package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `usage: handoffctl inspect FILE
       handoffctl status  (-socket PATH | -pidfile PATH) [-json]
       handoffctl upgrade (-socket PATH | -pidfile PATH) [-binary PATH] [-timeout DURATION] [-app NAME] [-json]
       handoffctl probe   (ready | live) (-socket PATH | -pidfile PATH)
       handoffctl wait    serving (-socket PATH | -pidfile PATH) [-timeout DURATION]

Commands:
  inspect   print a state file's header and sections and verify its checksums
  status    print a server's status: pid, version, generation, uptimes,
            connections, upgrade totals and its last upgrade
  upgrade   upgrade a server now and show each phase as it ends; the answer
            comes from the process that started the upgrade
  probe     answer an orchestrator's probe (a Kubernetes exec probe) from
            the server's phase: ready passes while it starts, serves,
            upgrades or idles handed over; live passes unless it stopped.
            A pod's idle container and one taking over stay ready, so
            that the pod stays in its Service (kubernetes/README.md)
  wait      block until the server serves (or has handed over, or idles as
            the SidecarSet's empty image: it will never serve); fail at
            once if it stopped, and past -timeout (default 1m). A new
            container's postStart hook that returns once its takeover
            committed (kubernetes/sidecarset.yaml)

Flags of status, upgrade, probe and wait:
  -socket PATH     the server's control socket (its Options.ControlSocket)
  -pidfile PATH    find it instead as the one listening Unix socket of the
                   process whose pid PATH holds (from /proc/PID/fd and
                   /proc/net/unix)
  -json            print the server's JSON lines as they come
  -binary PATH     upgrade: the binary to start (default: the server's own)
  -timeout D       upgrade: bound up to the commit (default: the server's);
                   wait: how long to wait (default 1m)
  -app NAME        upgrade: switch to another application, the one the new
                   binary must be (its Options.App); without it, a binary of
                   another application than the server's is refused

Exit status:
  0  done: the file verifies, the status was read, the upgrade committed
  1  inspect: the file does not verify; upgrade: it rolled back (the reason
     is printed on one line); probe: it fails (why, on one line); wait:
     the server stopped, or did not serve within -timeout
  2  usage error
  3  the server could not be reached, went away without an answer, or is
     not a handoff control socket (wait: until -timeout)
  4  the server refused: another upgrade was running, it was not ready or
     stopping, or it refused the request (bad command, wrong user, busy)
`

// Exit statuses, as the flag package uses them: 2 is a usage error.
const (
	exitOK          = 0
	exitFailure     = 1 // inspect: not verified; upgrade: rolled back
	exitUsage       = 2
	exitUnreachable = 3
	exitRefused     = 4
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the exit status, so that only
// main calls os.Exit.
func run(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("handoffctl", stderr)
	if err := fs.Parse(args); err != nil {
		return parseStatus(err, stderr)
	}
	if fs.NArg() == 0 {
		return usageError(stderr, "no command: want inspect, status, upgrade, probe or wait")
	}
	switch cmd := fs.Arg(0); cmd {
	case "inspect":
		return runInspect(fs.Args()[1:], stdout, stderr)
	case "status", "upgrade":
		return runControl(cmd, fs.Args()[1:], stdout, stderr)
	case "probe":
		return runProbe(fs.Args()[1:], stdout, stderr)
	case "wait":
		return runWait(fs.Args()[1:], stdout, stderr)
	default:
		return usageError(stderr, fmt.Sprintf("unknown command %q: want inspect, status, upgrade, probe or wait", cmd))
	}
}

func runInspect(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("handoffctl inspect", stderr)
	if err := fs.Parse(args); err != nil {
		return parseStatus(err, stderr)
	}
	if fs.NArg() != 1 {
		return usageError(stderr, fmt.Sprintf("inspect takes one file, not %d arguments", fs.NArg()))
	}
	if err := inspect(stdout, fs.Arg(0)); err != nil {
		fmt.Fprintf(stderr, "handoffctl: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// newFlagSet returns a flag set that returns its errors instead of
// printing them or exiting: parseStatus says them.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseStatus reports a flag parse error and returns the exit status: -h
// prints the one usage text for every subcommand, and is not a failure;
// any other error is a usage error.
func parseStatus(err error, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stderr, usage)
		return exitOK
	}
	return usageError(stderr, err.Error())
}

// usageError says what is wrong with the command line in one line, and
// where the help is, rather than the whole help: the error is what the
// operator needs to see.
func usageError(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "handoffctl: %s\nRun 'handoffctl -h' for usage.\n", msg)
	return exitUsage
}
