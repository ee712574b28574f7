package systemd

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/handoff-dev/handoff/handoff"
)

// message is what a notice tells systemd (sd_notify(3)), for a process of
// pid; empty for nothing.
//
//   - serving: MAINPID= first, so that systemd takes READY=1 (and, under
//     NotifyAccess=main, anything later) from this process, not from the
//     old one that started it; then READY=1, which also ends a reload.
//   - upgrading: RELOADING=1, with the MONOTONIC_USEC= that
//     Type=notify-reload (systemd 253+) requires.
//   - committing: MAINPID= names the successor, from the process systemd
//     still takes for the main one, before it is told to take over.
//   - rolled back: READY=1 again: the reload is over, this process serves.
//   - stopping: STOPPING=1.
//   - status (every handoff.StatusInterval while serving): STATUS= alone,
//     so that the connections systemctl status shows stay current.
//
// Each carries a STATUS= line for systemctl status.
func message(n handoff.Notice, pid int) string {
	st := "STATUS=" + statusLine(n)
	switch n.Event {
	case handoff.NoticeServing:
		return "MAINPID=" + strconv.Itoa(pid) + "\n" + daemon.SdNotifyReady + "\n" + st
	case handoff.NoticeUpgrading:
		return daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + st
	case handoff.NoticeCommitting:
		return "MAINPID=" + strconv.Itoa(n.To) + "\n" + st
	case handoff.NoticeRolledBack:
		return daemon.SdNotifyReady + "\n" + st
	case handoff.NoticeStopping:
		return daemon.SdNotifyStopping + "\n" + st
	case handoff.NoticeStatus:
		return st
	}
	return ""
}

// statusLine is one line an operator reads in systemctl status: version,
// what the process does, its connections and generation, and how the last
// upgrade went.
func statusLine(n handoff.Notice) string {
	s := n.Status
	var b strings.Builder
	if s.Version != "" {
		b.WriteString(s.Version + ": ")
	}
	switch n.Event {
	case handoff.NoticeUpgrading:
		b.WriteString("upgrading")
	case handoff.NoticeCommitting:
		fmt.Fprintf(&b, "handing over to pid %d", n.To)
	case handoff.NoticeStopping:
		b.WriteString("stopping")
	default:
		b.WriteString("serving")
	}
	if r := s.TakenOver; n.Event == handoff.NoticeServing && n.From != 0 && r != nil {
		// Sent before the connections taken over are counted as this
		// process's own.
		fmt.Fprintf(&b, ", took over %d connections from pid %d in %s, generation %d",
			r.Stats.Conns, n.From, round(r.Took), s.Generation)
	} else {
		fmt.Fprintf(&b, ", %d connections, generation %d", total(s.Conns), s.Generation)
	}
	r := n.Result
	if n.Event == handoff.NoticeStatus {
		r = s.Last // a refresh keeps saying how the last upgrade went
	}
	switch {
	case r != nil && !r.Committed:
		fmt.Fprintf(&b, "; upgrade rolled back (%s) after %s: %s", r.Cause, round(r.Took), oneLine(r.Err))
	case n.Event == handoff.NoticeStatus && s.TakenOver != nil:
		fmt.Fprintf(&b, "; took over %d connections in %s", s.TakenOver.Stats.Conns, round(s.TakenOver.Took))
	}
	if rb := sum(s.Totals.RolledBack); s.Totals.Committed+rb > 0 {
		fmt.Fprintf(&b, " (upgrades: %d committed, %d rolled back)", s.Totals.Committed, rb)
	}
	return oneLine(b.String())
}

func total(m map[string]int) (n int) {
	for _, v := range m {
		n += v
	}
	return n
}

func sum(m map[string]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// oneLine keeps a STATUS= value on one line and short: a newline would end
// it and start another assignment.
func oneLine(v any) string {
	s := strings.Join(strings.Fields(fmt.Sprint(v)), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}
