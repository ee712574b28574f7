//go:build linux

package systemd

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/handoff"
)

// fakeSystemd is a real unixgram socket standing in for systemd's
// notification socket, as go-systemd's own tests do.
type fakeSystemd struct {
	conn *net.UnixConn
}

func listenNotify(t *testing.T) *fakeSystemd {
	t.Helper()
	path := t.TempDir() + "/notify"
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &fakeSystemd{conn: c}
}

// next returns the next message and the fds it carried.
func (f *fakeSystemd) next(t *testing.T) (string, []int) {
	t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*8))
	f.conn.SetReadDeadline(time.Now().Add(60 * time.Second)) // a safety net
	n, oobn, _, _, err := f.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("no message from the supervisor: %v", err)
	}
	var fds []int
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, got...)
	}
	return string(buf[:n]), fds
}

func inode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// socketOf returns a listening socket that lives as long as the test,
// for the tests to which any socket will do.
func socketOf(t *testing.T) syscall.RawConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return rawOf(t, ln.(*net.TCPListener))
}

func rawOf(t *testing.T, c syscall.Conn) syscall.RawConn {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// TestKeepAndRelease: a kept connection reaches the store as a duplicate
// of the same socket, named so that any process holding it derives the
// name again, and Release removes it by that name.
func TestKeepAndRelease(t *testing.T) {
	sd := listenNotify(t)
	s := New(Options{KeepSockets: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	kind := "tcp:127.0.0.1:7070"
	if err := s.Keep(rawOf(t, server.(*net.TCPConn)), kind, false); err != nil {
		t.Fatal(err)
	}
	msg, fds := sd.next(t)
	if len(fds) != 1 {
		t.Fatalf("FDSTORE message carried %d fds, want 1", len(fds))
	}
	defer unix.Close(fds[0])
	var own int
	rawOf(t, server.(*net.TCPConn)).Control(func(fd uintptr) { own = int(fd) })
	if inode(t, fds[0]) != inode(t, own) {
		t.Fatal("the stored fd is not the connection's socket")
	}
	name := keptName(inode(t, own), kind, false)
	if msg != "FDSTORE=1\nFDNAME="+name {
		t.Fatalf("message %q, want FDSTORE=1 with FDNAME=%s", msg, name)
	}
	if strings.ContainsAny(name, ":\n") || len(name) > 255 {
		t.Fatalf("name %q is not a valid FDNAME", name)
	}
	if got, kept := parseName(name, false); !kept || got != kind {
		t.Fatalf("parseName(%q) = %q, %v; want %q", name, got, kept, kind)
	}
	if _, kept := parseName(name, true); kept {
		t.Fatal("a connection's name parsed as a listener's")
	}
	if err := s.Release(rawOf(t, server.(*net.TCPConn)), kind, false); err != nil {
		t.Fatal(err)
	}
	if msg, fds := sd.next(t); msg != "FDSTOREREMOVE=1\nFDNAME="+name || len(fds) != 0 {
		t.Fatalf("release sent %q with %d fds", msg, len(fds))
	}
}

// TestKeepOff: without KeepSockets nothing reaches the store.
func TestKeepOff(t *testing.T) {
	sd := listenNotify(t)
	s := New(Options{})
	if err := s.Keep(socketOf(t), "tcp 127.0.0.1:0", true); err != nil {
		t.Fatal(err)
	}
	s.Notify(handoff.Notice{Event: handoff.NoticeStopping})
	if msg, fds := sd.next(t); !strings.HasPrefix(msg, "STOPPING=1\n") || len(fds) != 0 {
		t.Fatalf("first message %q (%d fds), want the STOPPING=1 sent after Keep", msg, len(fds))
	}
}

// TestServingAfterTakeover: a process that took over names itself the
// main process before READY=1, then waits for systemd's barrier.
func TestServingAfterTakeover(t *testing.T) {
	sd := listenNotify(t)
	s := New(Options{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Notify(handoff.Notice{Event: handoff.NoticeServing, From: 1,
			Status: handoff.Status{Version: "v2", Generation: 3, TakenOver: &handoff.UpgradeResult{
				Committed: true, Took: 15 * time.Millisecond, Stats: handoff.UpgradeStats{Conns: 5}}}})
	}()
	msg, _ := sd.next(t)
	lines := strings.Split(msg, "\n")
	pid := "MAINPID=" + itoa(os.Getpid())
	if len(lines) != 3 || lines[0] != pid || lines[1] != "READY=1" ||
		lines[2] != "STATUS=v2: serving, took over 5 connections from pid 1 in 15ms, generation 3" {
		t.Fatalf("serving sent %q", msg)
	}
	barrier, fds := sd.next(t)
	if barrier != "BARRIER=1" || len(fds) != 1 {
		t.Fatalf("then %q with %d fds, want BARRIER=1 with a pipe", barrier, len(fds))
	}
	select {
	case <-done:
		t.Fatal("Notify returned before systemd answered the barrier")
	case <-time.After(50 * time.Millisecond):
	}
	unix.Close(fds[0]) // what systemd does once it has read everything before
	select {
	case <-done:
	case <-time.After(60 * time.Second): // a safety net
		t.Fatal("Notify still waits after the barrier was answered")
	}
}

// TestWatchdogAfterSecondTakeover: a process that took over from one that
// had itself taken over pings the watchdog. Its environment may still
// name the first process in WATCHDOG_PID (the second process started it
// before its own Notify had taken the variable over), and then go-systemd
// says the watchdog is not for it: before, it sent no WATCHDOG=1 and
// systemd killed the service (e2e TestReload, once under load).
func TestWatchdogAfterSecondTakeover(t *testing.T) {
	sd := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("WATCHDOG_PID", "1") // the first process; this one took over from 2
	s := New(Options{})
	go s.Notify(handoff.Notice{Event: handoff.NoticeServing, From: 2,
		Status: handoff.Status{Version: "v2", TakenOver: &handoff.UpgradeResult{Committed: true}}})
	for {
		msg, fds := sd.next(t) // fails after its safety net if no ping comes
		if msg == "BARRIER=1" {
			unix.Close(fds[0])
		}
		if msg == "WATCHDOG=1" {
			break
		}
	}
	if got := os.Getenv("WATCHDOG_PID"); got != itoa(os.Getpid()) {
		t.Fatalf("WATCHDOG_PID=%s, want this process's %d for its own successor", got, os.Getpid())
	}
}

// TestRolledBackStatus: after a rollback the old process says it is ready
// again, and the status line says why the upgrade failed.
func TestRolledBackStatus(t *testing.T) {
	sd := listenNotify(t)
	s := New(Options{})
	res := &handoff.UpgradeResult{Cause: handoff.CauseExited, Took: 41 * time.Millisecond,
		Err: errors.New("the new process exited:\nexit status 3")}
	s.Notify(handoff.Notice{Event: handoff.NoticeRolledBack, Result: res,
		Status: handoff.Status{Version: "v1", Totals: handoff.Totals{RolledBack: map[string]uint64{"exited": 1}}}})
	msg, _ := sd.next(t)
	want := "READY=1\nSTATUS=v1: serving, 0 connections, generation 0; upgrade rolled back (exited) after 41ms: " +
		"the new process exited: exit status 3 (upgrades: 0 committed, 1 rolled back)"
	if msg != want {
		t.Fatalf("rollback sent\n%q\nwant\n%q", msg, want)
	}
}

// TestOutsideSystemd: without $NOTIFY_SOCKET nothing is sent and nothing
// fails.
func TestOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	s := New(Options{KeepSockets: true})
	if s.UnderSystemd() {
		t.Fatal("UnderSystemd without NOTIFY_SOCKET")
	}
	if err := s.Keep(socketOf(t), "k", true); err != nil {
		t.Fatal(err)
	}
	s.Notify(handoff.Notice{Event: handoff.NoticeServing})
}

func TestEscapeRoundTrip(t *testing.T) {
	for _, k := range []string{"tcp:127.0.0.1:7070", "unix:/run/x y/%", "tcp:[::1]:80", ""} {
		e := escape(k)
		if strings.ContainsAny(e, ": /[]") {
			t.Fatalf("escape(%q) = %q keeps a character systemd or a reader would trip on", k, e)
		}
		if got, err := unescape(e); err != nil || got != k {
			t.Fatalf("unescape(escape(%q)) = %q, %v", k, got, err)
		}
	}
	if _, err := unescape("%4"); err == nil {
		t.Fatal("a cut escape was accepted")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestKeepWhenSystemdLags: when systemd reads slower than the server
// accepts, a send blocks; a signal then (the Go runtime's preemption
// signal, say) interrupts it, and the message must be sent anyway, not
// lost with EINTR.
func TestKeepWhenSystemdLags(t *testing.T) {
	sd := listenNotify(t)
	s := New(Options{KeepSockets: true})
	rc := socketOf(t)
	const n = 3000
	got := make(chan int)
	go func() { // a slow systemd
		k := 0
		buf, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(4))
		for k < n {
			sd.conn.SetReadDeadline(time.Now().Add(60 * time.Second)) // a safety net
			_, oobn, _, _, err := sd.conn.ReadMsgUnix(buf, oob)
			if err != nil {
				break
			}
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
			k++
			if k%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		got <- k
	}()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // signals, as the runtime sends them
		for {
			select {
			case <-stop:
				return
			default:
				syscall.Kill(os.Getpid(), syscall.SIGURG)
				time.Sleep(20 * time.Microsecond)
			}
		}
	}()
	for i := 0; i < n; i++ {
		if err := s.Keep(rc, "tcp 127.0.0.1:0", true); err != nil {
			t.Fatalf("keep %d: %v", i, err)
		}
	}
	if k := <-got; k != n {
		t.Fatalf("systemd got %d messages, want %d", k, n)
	}
}

// TestMaxKept: past MaxKept connections, Keep sends nothing (systemd's
// cost grows with the store); a release makes room again, and a process
// that took over counts the connections it took over as kept.
func TestMaxKept(t *testing.T) {
	sd := listenNotify(t)
	s := New(Options{KeepSockets: true, MaxKept: 2})
	rc := socketOf(t) // stands in for a connection
	keep := func() {
		if err := s.Keep(rc, "k", false); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(prefix string) {
		t.Helper()
		msg, fds := sd.next(t)
		for _, fd := range fds {
			unix.Close(fd)
		}
		if !strings.HasPrefix(msg, prefix) {
			t.Fatalf("message %q, want %s...", msg, prefix)
		}
	}
	keep()
	keep()
	keep() // the third: not sent
	if err := s.Release(rc, "k", false); err != nil {
		t.Fatal(err)
	}
	expect("FDSTORE=1")
	expect("FDSTORE=1")
	expect("FDSTOREREMOVE=1")
	keep()
	expect("FDSTORE=1")
	// A listener is kept whatever the count.
	if err := s.Keep(rc, "l", true); err != nil {
		t.Fatal(err)
	}
	expect("FDSTORE=1")

	s2 := New(Options{KeepSockets: true, MaxKept: 2})
	go s2.Notify(handoff.Notice{Event: handoff.NoticeServing, From: 1,
		Status: handoff.Status{TakenOver: &handoff.UpgradeResult{Stats: handoff.UpgradeStats{Conns: 5}}}})
	expect("MAINPID=")
	_, fds := sd.next(t) // the barrier
	for _, fd := range fds {
		unix.Close(fd)
	}
	if err := s2.Keep(rc, "k", false); err != nil {
		t.Fatal(err)
	}
	s2.Notify(handoff.Notice{Event: handoff.NoticeStopping})
	expect("STOPPING=1") // not FDSTORE=1: the store is full of what it took over
}

// TestStatusRefresh: the periodic refresh is a STATUS= line alone, with
// the connections as they are now and how the last upgrade went.
func TestStatusRefresh(t *testing.T) {
	sd := listenNotify(t)
	s := New(Options{})
	s.Notify(handoff.Notice{Event: handoff.NoticeStatus, Status: handoff.Status{
		Version: "v2", Generation: 4, Conns: map[string]int{"tcp:a": 7, "tcp:b": 3},
		TakenOver: &handoff.UpgradeResult{Committed: true, Took: 20 * time.Millisecond,
			Stats: handoff.UpgradeStats{Conns: 9}},
		Totals: handoff.Totals{Committed: 4, RolledBack: map[string]uint64{}},
	}})
	msg, _ := sd.next(t)
	want := "STATUS=v2: serving, 10 connections, generation 4; took over 9 connections in 20ms " +
		"(upgrades: 4 committed, 0 rolled back)"
	if msg != want {
		t.Fatalf("refresh sent\n%q\nwant\n%q", msg, want)
	}
	s.Notify(handoff.Notice{Event: handoff.NoticeStatus, Status: handoff.Status{
		Version: "v2", Last: &handoff.UpgradeResult{Cause: handoff.CauseTimeout, Took: 30 * time.Second,
			Err: errors.New("handoff: upgrade timed out")}}})
	if msg, _ := sd.next(t); !strings.Contains(msg, "; upgrade rolled back (timeout) after 30s: handoff: upgrade timed out") ||
		strings.Contains(msg, "READY=1") {
		t.Fatalf("refresh after a rollback sent %q", msg)
	}
}
