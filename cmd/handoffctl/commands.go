package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
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
	path := *socket
	if path == "" {
		var err error
		if path, err = socketOf(*pidfile); err != nil {
			fmt.Fprintf(stderr, "handoffctl: %v\n", err)
			return exitUnreachable
		}
	}
	line := "HANDOFF-CONTROL 1 " + cmd
	if cmd == "upgrade" {
		if *binary != "" {
			abs, err := absPath(*binary)
			if err != nil {
				return usageError(stderr, fmt.Sprintf("-binary: %v", err))
			}
			line += " binary=" + abs
		}
		if *timeout < 0 {
			return usageError(stderr, "-timeout must be positive")
		}
		if *timeout > 0 {
			line += " timeout=" + timeout.String()
		}
		if strings.IndexFunc(*app, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
			fmt.Fprintln(stderr, "handoffctl: -app: an application name has no spaces or control characters")
			return exitUsage
		}
		if *app != "" {
			line += " app=" + *app
		}
	}
	out := &printer{w: stdout, json: *asJSON, progress: !*asJSON && isTerminal(stdoutFile(stdout))}
	err := request(path, line, out.print)
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
	result    *answer
	serverErr string
}

func (p *printer) print(a answer) error {
	if p.json {
		p.w.Write(append(a.raw, '\n'))
	}
	switch a.Type {
	case "error":
		p.serverErr = a.Error
	case "status":
		p.status = true
		if !p.json {
			printStatus(p.w, a)
		}
	case "phase":
		if p.json {
			break
		}
		step := fmt.Sprintf("%s %s", a.Phase, ns(a.TookNS))
		if p.progress {
			p.phases = append(p.phases, step)
			fmt.Fprintf(p.w, "\r\033[Kupgrading to pid %d: %s", a.PID, strings.Join(p.phases, ", "))
		} else {
			fmt.Fprintf(p.w, "phase %s: %s, pid %d, conns %s, bytes %d\n", a.Phase, ns(a.TookNS), a.PID, count(a.Conns), a.Bytes)
		}
	case "result":
		r := a
		p.result = &r
		if p.json {
			break
		}
		p.endProgress()
		if a.Committed {
			fmt.Fprintf(p.w, "committed: pid %d -> %d in %s, %s connections, %d state bytes\n",
				a.From, a.To, ns(a.TookNS), count(a.Conns), a.StateBytes)
		}
	}
	return nil
}

// count prints a JSON count that the server leaves out when it is 0.
func count(v any) string {
	if n, ok := v.(float64); ok {
		return strconv.FormatFloat(n, 'f', -1, 64)
	}
	return "0"
}

func (p *printer) endProgress() {
	if p.progress && len(p.phases) > 0 {
		fmt.Fprintln(p.w)
		p.phases = nil
	}
}

func printStatus(w io.Writer, a answer) {
	fmt.Fprintf(w, "pid:          %d\n", a.PID)
	fmt.Fprintf(w, "version:      %s\n", a.Version)
	fmt.Fprintf(w, "phase:        %s\n", a.Phase)
	fmt.Fprintf(w, "generation:   %d\n", a.Generation)
	fmt.Fprintf(w, "uptime:       %s (chain %s)\n", ns(a.UptimeNS).Round(time.Second), ns(a.ChainUptimeNS).Round(time.Second))
	if conns, ok := a.Conns.(map[string]any); ok {
		kinds := make([]string, 0, len(conns))
		for k := range conns {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			fmt.Fprintf(w, "conns:        %s %v\n", k, conns[k])
		}
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
		fmt.Fprintf(w, "last upgrade: %s, pid %d -> %d in %s, %s connections, %d state bytes\n",
			outcome, l.From, l.To, ns(l.TookNS), count(l.Conns), l.StateBytes)
		if p := phases(l.PhasesNS); p != "" {
			fmt.Fprintf(w, "phases:       %s\n", p)
		}
	}
}

// phaseOrder is the order of an upgrade's phases, as the server names
// them in phases_ns.
var phaseOrder = []string{"start", "fds", "park", "parked", "state", "adopt", "commit", "release", "move", "pause"}

// phases says each phase's time, in their order; phases a newer server
// adds come last.
func phases(m map[string]int64) string {
	var out []string
	seen := map[string]bool{}
	for _, name := range phaseOrder {
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
