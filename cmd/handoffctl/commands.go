package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/internal/controlwire"
)

// runControl runs status or upgrade against a server's control socket.
func runControl(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("handoffctl "+cmd, stderr)
	socket := fs.String("socket", "", "control socket `path`")
	pidfile := fs.String("pidfile", "", "pid `file` of the server")
	asJSON := fs.Bool("json", false, "print the server's JSON lines")
	var binary, app *string
	var timeout *time.Duration
	if cmd == "upgrade" {
		binary = fs.String("binary", "", "binary to upgrade to")
		timeout = fs.Duration("timeout", 0, "bound on the upgrade up to its commit")
		app = fs.String("app", "", "application the new binary must be")
	}
	if err := fs.Parse(args); err != nil {
		return parseStatus(err, stderr)
	}
	if fs.NArg() != 0 || (*socket == "") == (*pidfile == "") {
		return usageError(stderr, cmd+" takes one of -socket and -pidfile, and no arguments")
	}
	path, err := controlPath(*socket, *pidfile)
	if err != nil {
		fmt.Fprintf(stderr, "handoffctl: %v\n", err)
		return exitUnreachable
	}
	req := controlwire.Request{Command: cmd}
	if cmd == "upgrade" {
		if *binary != "" {
			abs, err := absPath(*binary)
			if err != nil {
				return usageError(stderr, fmt.Sprintf("-binary: %v", err))
			}
			req.Binary = abs
		}
		if *timeout < 0 {
			return usageError(stderr, "-timeout must be positive")
		}
		req.Timeout = *timeout
		if strings.IndexFunc(*app, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
			fmt.Fprintln(stderr, "handoffctl: -app: an application name has no spaces or control characters")
			return exitUsage
		}
		req.App = *app
	}
	out := &printer{w: stdout, json: *asJSON, progress: !*asJSON && isTerminal(stdoutFile(stdout))}
	err = request(path, req.Line(), out.print)
	out.endProgress()
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "handoffctl: %s: %v\n", path, err)
		if errors.Is(err, errUnreachable) {
			return exitUnreachable
		}
		return exitFailure
	case out.serverErr != "":
		fmt.Fprintf(stderr, "handoffctl: refused: %s\n", out.serverErr)
		return exitRefused
	case cmd == "status" && out.status:
		return exitOK
	case cmd == "upgrade" && out.result != nil:
		r := out.result
		switch {
		case r.Committed:
			return exitOK
		case r.Refused:
			fmt.Fprintf(stderr, "handoffctl: upgrade refused: %s\n", orUnknown(r.Reason))
			return exitRefused
		}
		fmt.Fprintf(stderr, "handoffctl: upgrade rolled back (%s): %s\n", r.Cause, orUnknown(r.Reason))
		return exitFailure
	}
	fmt.Fprintf(stderr, "handoffctl: %s: the server went away without an answer\n", path)
	return exitUnreachable
}

// controlPath is the control socket -socket names, or else the one of
// the process whose pid -pidfile holds.
func controlPath(socket, pidfile string) (string, error) {
	if socket != "" {
		return socket, nil
	}
	return socketOf(pidfile)
}

func absPath(p string) (string, error) {
	if strings.HasPrefix(p, "/") {
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	return wd + "/" + p, nil
}

func stdoutFile(w io.Writer) *os.File {
	if f, ok := w.(*os.File); ok {
		return f
	}
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// orUnknown is a server's reason on one line, never blank.
func orUnknown(reason string) string {
	if r := oneLine(reason); r != "" {
		return r
	}
	return "the server gave no reason"
}

// printer prints the server's answers as they come: JSON lines as they
// are, a progress line on a terminal, or a plain line each.
type printer struct {
	w         io.Writer
	json      bool
	progress  bool
	phases    []string
	status    bool
	result    *controlwire.Result
	serverErr string
}

func (p *printer) print(a answer) error {
	if p.json {
		p.w.Write(append(a.raw, '\n'))
	}
	switch a.Type {
	case controlwire.TypeError:
		p.serverErr = a.Error.Error
	case controlwire.TypeStatus:
		p.status = true
		if !p.json {
			printStatus(p.w, a.Status)
		}
	case controlwire.TypePhase:
		if !p.json {
			p.printPhase(a.Phase)
		}
	case controlwire.TypeResult:
		r := a.Result
		p.result = &r
		if p.json {
			break
		}
		p.endProgress()
		if r.Committed {
			fmt.Fprintf(p.w, "committed: pid %d -> %d in %s, %d connections, %d state bytes\n",
				r.From, r.To, ns(r.TookNS), r.Conns, r.StateBytes)
		}
	}
	return nil
}

// printPhase prints a phase as it ends: on a terminal, added to the
// progress line.
func (p *printer) printPhase(ph controlwire.Phase) {
	step := fmt.Sprintf("%s %s", ph.Phase, ns(ph.TookNS))
	if p.progress {
		p.phases = append(p.phases, step)
		fmt.Fprintf(p.w, "\r\033[Kupgrading to pid %d: %s", ph.PID, strings.Join(p.phases, ", "))
		return
	}
	fmt.Fprintf(p.w, "phase %s: %s, pid %d, conns %d, bytes %d\n", ph.Phase, ns(ph.TookNS), ph.PID, ph.Conns, ph.Bytes)
}

func (p *printer) endProgress() {
	if p.progress && len(p.phases) > 0 {
		fmt.Fprintln(p.w)
		p.phases = nil
	}
}

func printStatus(w io.Writer, a controlwire.Status) {
	fmt.Fprintf(w, "pid:          %d\n", a.PID)
	fmt.Fprintf(w, "version:      %s\n", a.Version)
	fmt.Fprintf(w, "phase:        %s\n", a.Phase)
	fmt.Fprintf(w, "generation:   %d\n", a.Generation)
	fmt.Fprintf(w, "uptime:       %s (chain %s)\n", ns(a.UptimeNS).Round(time.Second), ns(a.ChainUptimeNS).Round(time.Second))
	kinds := make([]string, 0, len(a.Conns))
	for k := range a.Conns {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "conns:        %s %d\n", k, a.Conns[k])
	}
	fmt.Fprintf(w, "committed:    %d (%d connections handed over)\n", a.Totals.Committed, a.Totals.ConnsHandedOver)
	causes := make([]string, 0, len(a.Totals.RolledBack))
	for c, n := range a.Totals.RolledBack {
		causes = append(causes, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(causes)
	if len(causes) == 0 {
		causes = []string{"0"}
	}
	fmt.Fprintf(w, "rolled back:  %s\n", strings.Join(causes, " "))
	if l := a.Last; l != nil {
		outcome := "committed"
		if !l.Committed {
			outcome = fmt.Sprintf("rolled back (%s): %s", l.Cause, orUnknown(l.Reason))
		}
		if l.Mode != "" { // older servers leave it out
			outcome += ", " + l.Mode
		}
		fmt.Fprintf(w, "last upgrade: %s, pid %d -> %d in %s, %d connections, %d state bytes\n",
			outcome, l.From, l.To, ns(l.TookNS), l.Conns, l.StateBytes)
		if p := phases(l.PhasesNS); p != "" {
			fmt.Fprintf(w, "phases:       %s\n", p)
		}
	}
}

// phases says each phase's time, in their order; phases a newer server
// adds come last.
func phases(m map[string]int64) string {
	var out []string
	seen := map[string]bool{}
	for _, name := range handoff.Phases {
		if v, ok := m[name]; ok {
			out = append(out, fmt.Sprintf("%s %s", name, ns(v)))
			seen[name] = true
		}
	}
	var rest []string
	for name := range m {
		if !seen[name] {
			rest = append(rest, name)
		}
	}
	sort.Strings(rest)
	for _, name := range rest {
		out = append(out, fmt.Sprintf("%s %s", name, ns(m[name])))
	}
	return strings.Join(out, ", ")
}
