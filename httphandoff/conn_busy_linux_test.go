//go:build linux

package httphandoff

import (
	"net/http"
	"os"
	"testing"
	"time"
)

// TestConnBusyDeadlines walks a conn through net/http's calls for two
// keep-alive requests and a hijack, fresh and carried from another
// process: after each call, busy (which lets SetReadDeadline skip mu) is
// set exactly when the phase is busy and no carried deadline holds, and
// a read deadline set while busy reaches the connection beneath as is.
func TestConnBusyDeadlines(t *testing.T) {
	for _, carried := range []bool{false, true} {
		t.Run(map[bool]string{false: "fresh", true: "carried"}[carried], func(t *testing.T) {
			rc := &recordConn{}
			hc := benchUpgrader(t).Wrap(rc, "test")
			defer hc.Close()
			var idle time.Time
			if carried {
				idle = time.Now().Add(time.Hour)
			}
			c := newConn(New(&http.Server{}), hc, hc, carried, idle)
			check := func(step string) {
				t.Helper()
				c.mu.Lock()
				want := c.phase == phaseBusy && !c.hold
				c.mu.Unlock()
				if got := c.busy.Load(); got != want {
					t.Fatalf("after %s: busy %v, want %v", step, got, want)
				}
			}
			at := time.Now()
			deadline := func(step string) {
				t.Helper()
				at = at.Add(time.Minute) // each one its own
				busy := c.busy.Load()
				if err := c.SetReadDeadline(at); err != nil {
					t.Fatal(err)
				}
				if busy && !rc.deadline.Equal(at) {
					t.Fatalf("%s while busy: the connection got %v, want %v", step, rc.deadline, at)
				}
				check(step)
			}
			p := make([]byte, bufioSize)
			read := func(step string, p []byte) {
				t.Helper()
				if _, err := c.Read(p); err != nil {
					t.Fatalf("%s: %v", step, err)
				}
				check(step)
			}
			state := func(st http.ConnState) {
				t.Helper()
				c.setState(st)
				check(st.String())
			}
			check("newConn")
			state(http.StateNew)
			deadline("the header deadline")
			read("the first head's Read", p)
			for i := range 2 {
				if i > 0 {
					state(http.StateIdle)
					deadline("the idle deadline")
					read("Peek(4)", p)
					deadline("the header deadline")
				}
				deadline("ReadTimeout's deadline")
				state(http.StateActive)
				deadline("startBackgroundRead")
				if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\n\r\n")); err != nil {
					t.Fatal(err)
				}
				if err := c.SetReadDeadline(time.Unix(1, 0)); err != nil { // abortPendingRead
					t.Fatal(err)
				}
				if _, err := c.Read(p[:1]); !os.IsTimeout(err) {
					t.Fatalf("the background read: %v, want a timeout", err)
				}
				check("the background read")
				deadline("abortPendingRead's last")
			}
			state(http.StateHijacked)
			deadline("the hijacker's deadline")
		})
	}
	t.Run("carried closed before a byte", func(t *testing.T) {
		// Busy by its phase, but under the deadline it carried: that
		// one holds, and SetReadDeadline keeps to mu.
		rc := &recordConn{}
		hc := benchUpgrader(t).Wrap(rc, "test")
		defer hc.Close()
		idle := time.Now().Add(time.Hour)
		c := newConn(New(&http.Server{}), hc, hc, true, idle)
		c.setState(http.StateNew)
		c.setState(http.StateClosed)
		if c.busy.Load() {
			t.Fatal("busy under a carried deadline")
		}
		if err := c.SetReadDeadline(idle.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if !rc.deadline.Equal(idle) {
			t.Fatalf("the connection's deadline: %v, want the carried %v", rc.deadline, idle)
		}
	})
}

// recordConn is a net.Conn that keeps its read deadline, returns a GET to
// a Read before it and times out after it; its writes cost nothing.
type recordConn struct {
	requestConn
	deadline time.Time
}

func (r *recordConn) SetReadDeadline(t time.Time) error {
	r.deadline = t
	return r.requestConn.SetReadDeadline(t)
}
