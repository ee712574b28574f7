package app

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// keepAlive is a raw HTTP/1.1 client on one connection.
type keepAlive struct {
	c net.Conn
	r *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAlive {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{c: c, r: bufio.NewReader(c)}
}

// get sends GET / and returns the body of a 200.
func (k *keepAlive) get(t *testing.T) string {
	t.Helper()
	_ = k.c.SetDeadline(time.Now().Add(30 * time.Second)) // a safety net
	if _, err := k.c.Write([]byte("GET / HTTP/1.1\r\nHost: test\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := new(strings.Builder)
	if _, err := bufio.NewReader(resp.Body).WriteTo(body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /: %d %q %v", resp.StatusCode, body, err)
	}
	return body.String()
}

// controlStatus is what the control socket's status says, as far as the
// test reads it (handoff/CONTROL.md).
type controlStatus struct {
	Type   string `json:"type"`
	PID    int    `json:"pid"`
	Totals struct {
		Committed       uint64 `json:"committed"`
		ConnsHandedOver uint64 `json:"conns_handed_over"`
	} `json:"totals"`
	Last *struct {
		Committed bool             `json:"committed"`
		Mode      string           `json:"mode"`
		From      int              `json:"from"`
		To        int              `json:"to"`
		Conns     int              `json:"conns"`
		PhasesNS  map[string]int64 `json:"phases_ns"`
	} `json:"last"`
}

// askStatus asks the control socket at path for the status.
func askStatus(t *testing.T, path string) controlStatus {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // a safety net
	if _, err := c.Write([]byte("HANDOFF-CONTROL 1 status\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	var st controlStatus
	if err := json.Unmarshal(line, &st); err != nil || st.Type != "status" {
		t.Fatalf("status answer %q: %v", line, err)
	}
	return st
}

// TestStatusAfterUpgrade: after an upgrade that handed over N keep-alive
// connections, the new process's status names that upgrade with each
// phase's time, and it and the metrics count N connections handed over;
// in rolling mode, where they move after the commit, too, and with no
// pause.
func TestStatusAfterUpgrade(t *testing.T) {
	for _, tc := range []struct{ flag, mode string }{{modeFull, "all-at-once"}, {modeRolling, "rolling"}} {
		t.Run(tc.flag, func(t *testing.T) { statusAfterUpgrade(t, tc.flag, tc.mode) })
	}
}

func statusAfterUpgrade(t *testing.T, flag, mode string) {
	const n = 12
	ctl := filepath.Join(t.TempDir(), "ctl", "control.sock")
	h := startHTTPD(t, "-upgrade-mode", flag, "-control", ctl)
	conns := make([]*keepAlive, n)
	for i := range conns {
		conns[i] = dialKeepAlive(t, h.addr)
		if body := conns[i].get(t); body != fmt.Sprintf("v1 %d\n", h.pid) {
			t.Fatalf("GET / = %q before the upgrade", body)
		}
	}
	if err := syscall.Kill(h.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.logs.await(t, `msg="upgrade complete"`, fmt.Sprintf("pid=%d ", h.pid))
	next := readPID(t, h.pidfile)
	if flag == modeRolling {
		h.logs.await(t, `msg="handoff: rolling move done"`, fmt.Sprintf("pid=%d ", next), fmt.Sprintf("moved=%d ", n))
	}
	for i, k := range conns {
		if body := k.get(t); body != fmt.Sprintf("v1 %d\n", next) {
			t.Fatalf("connection %d after the upgrade: %q, want the new process %d", i, body, next)
		}
	}

	st := askStatus(t, ctl)
	if st.PID != next {
		t.Fatalf("status from pid %d, want the new process %d", st.PID, next)
	}
	if st.Totals.Committed != 1 || st.Totals.ConnsHandedOver != n {
		t.Errorf("totals: %d committed, %d connections handed over; want 1 and %d", st.Totals.Committed,
			st.Totals.ConnsHandedOver, n)
	}
	_, metrics := get(t, fresh, "http://"+h.metrics+"/metrics")
	if want := fmt.Sprintf("\nhandoff_connections_handed_over_total %d\n", n); !strings.Contains(metrics, want) {
		t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
	}
	pauseSum := `handoff_upgrade_phase_seconds_sum{phase="pause"} 0` + "\n"
	if (mode == "rolling") != strings.Contains(metrics, pauseSum) {
		t.Errorf("%s upgrade: /metrics says %q", mode, lineOf(metrics, `handoff_upgrade_phase_seconds_sum{phase="pause"}`))
	}
	l := st.Last
	if l == nil {
		t.Fatal(`status of the new process: "last": null, want the upgrade that started it`)
	}
	if !l.Committed || l.Mode != mode || l.From != h.pid || l.To != next || l.Conns != n {
		t.Errorf("last: %+v; want committed, mode %s, from %d to %d, %d connections", *l, mode, h.pid, next, n)
	}
	for _, phase := range []string{"connected", "fds", "ready", "commit"} {
		if l.PhasesNS[phase] <= 0 {
			t.Errorf("last upgrade's phase %s: %d ns, want its time (phases %v)", phase, l.PhasesNS[phase], l.PhasesNS)
		}
	}
	if pause := l.PhasesNS["pause"]; (mode == "rolling") != (pause == 0) {
		t.Errorf("%s upgrade's pause: %d ns", mode, pause)
	}
	if _, ok := l.PhasesNS["move"]; (mode == "rolling") != ok {
		t.Errorf("%s upgrade's phases %v: a move phase in rolling mode only", mode, l.PhasesNS)
	}

	h.stop(t, next)
}

// lineOf is the line of text that starts with prefix.
func lineOf(text, prefix string) string {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}
