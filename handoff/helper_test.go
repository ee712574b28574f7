//go:build linux

package handoff

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
	"github.com/handoff-dev/handoff/statefile"
)

// The test binary doubles as the server under test: TestMain runs
// serverMain when envRole says so. Every process of the upgrade chain is
// such a server; they report to the test over a unixgram socket.
const (
	envRole   = "HANDOFF_TEST_ROLE"
	envEvents = "HANDOFF_TEST_EVENTS" // unixgram socket of the test
	envFault  = "HANDOFF_TEST_FAULT"  // file naming the fault of the next new process
	envAddr   = "HANDOFF_TEST_ADDR"
	// envListenersOnly makes every server of the chain hand over its
	// listeners only, and drain its connections after the upgrade.
	envListenersOnly = "HANDOFF_TEST_LISTENERS_ONLY"
	// envRolling makes every server of the chain hand over in Rolling
	// mode.
	envRolling = "HANDOFF_TEST_ROLLING"
	// envMoveTimeout and envCloseStragglers set Options.MoveTimeout and
	// Options.Stragglers.
	envMoveTimeout     = "HANDOFF_TEST_MOVE_TIMEOUT"
	envCloseStragglers = "HANDOFF_TEST_CLOSE_STRAGGLERS"
	// envPause lists steps (hook names, and "linger" after Exit) at which
	// a process says "paused" and waits for the test; see barrier.
	envPause = "HANDOFF_TEST_PAUSE"
	// envProbe lists steps at which a process starts a probe; see runProbe.
	envProbe          = "HANDOFF_TEST_PROBE"
	envUpgradeTimeout = "HANDOFF_TEST_UPGRADE_TIMEOUT"
	envPauseTimeout   = "HANDOFF_TEST_PAUSE_TIMEOUT"
	envPIDFile        = "HANDOFF_TEST_PIDFILE"
	envState          = "HANDOFF_TEST_STATE" // the state file a stopped server saves to
	// envCarry makes each connection carry the requests it served since
	// the last SaveState, and a process that resumes it add them to its
	// total (after the barrier "apply"), as a Rolling server whose
	// connections change a shared state must: the snapshot misses them.
	envCarry = "HANDOFF_TEST_CARRY"
	// envSupervisor names a file to which every server of the chain logs
	// what its Supervisor is told; see logSupervisor.
	envSupervisor = "HANDOFF_TEST_SUPERVISOR"
	// envControl sets Options.ControlSocket of every server of the chain.
	envControl = "HANDOFF_TEST_CONTROL"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "server":
		serverMain()
		return
	case "probe":
		probeMain()
		return
	}
	os.Exit(m.Run())
}

// reporter is this process's one connection to the test's event socket,
// kept open so that the test's fd counts are steady.
var reporter = sync.OnceValue(func() net.Conn {
	c, _ := net.Dial("unixgram", os.Getenv(envEvents))
	return c
})

// report sends one event line to the test.
func report(format string, args ...any) {
	if c := reporter(); c != nil {
		fmt.Fprintf(c, format, args...)
	}
}

// lineServer is the application of the test server: each request line
// "<x>" gets "<x> <n> <pid>", n counting this connection's earlier
// requests, and a global total that travels as state.
type lineServer struct {
	mu    sync.Mutex
	total uint64
	saves uint64 // SaveState calls, for envCarry
}

func (s *lineServer) serve(c *Conn, state []byte) {
	var n uint64
	if len(state) >= 8 {
		n = binary.BigEndian.Uint64(state)
	}
	carry := s.apply(state)
	for {
		line, err := c.Next(bufio.ScanLines)
		if errors.Is(err, ErrPark) {
			if c.Park(carry.state(s, n)) != nil {
				return
			}
			continue
		}
		if err != nil {
			c.Close()
			return
		}
		s.mu.Lock()
		s.total++
		carry.count(s)
		s.mu.Unlock()
		if ms, ok := strings.CutPrefix(string(line), "sleep-"); ok {
			// A request that takes long: it keeps its connection from
			// parking meanwhile.
			d, _ := strconv.Atoi(ms)
			time.Sleep(time.Duration(d) * time.Millisecond)
		}
		if name, ok := strings.CutPrefix(string(line), "hold-"); ok {
			// A request that takes as long as the test needs, however
			// loaded the machine: held until the test releases it.
			hold("hold-" + name)
		}
		if string(line) == "quit" {
			fmt.Fprintf(c, "bye\n")
			c.Close()
			return
		}
		if _, err := fmt.Fprintf(c, "%s %d %d\n", line, n, os.Getpid()); err != nil {
			c.Close()
			return
		}
		n++
	}
}

// lineCarry counts, for envCarry, a connection's requests since the
// server's SaveState number epoch.
type lineCarry struct {
	on           bool
	epoch, since uint64
}

// apply adds what a resumed connection carried to the total, once the
// barrier "apply" lets it, and returns its count from now on.
func (s *lineServer) apply(state []byte) *lineCarry {
	c := &lineCarry{on: os.Getenv(envCarry) != ""}
	if !c.on {
		return c
	}
	if len(state) == 16 {
		barrier("apply")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(state) == 16 {
		s.total += binary.BigEndian.Uint64(state[8:])
	}
	c.epoch = s.saves
	return c
}

// count counts one request; called with s.mu held.
func (c *lineCarry) count(s *lineServer) {
	if c.epoch != s.saves {
		c.epoch, c.since = s.saves, 0
	}
	c.since++
}

// state is what a connection parks with: its request count n and, for
// envCarry, the requests the last SaveState missed.
func (c *lineCarry) state(s *lineServer, n uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, n)
	if !c.on {
		return b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.epoch != s.saves {
		c.epoch, c.since = s.saves, 0
	}
	return binary.BigEndian.AppendUint64(b, c.since)
}

// lineStates is the test server's state as a statefile: schema 1 is what
// it saves; a new process that is told to "panic:migrate" asks for schema
// 2, whose migration step panics.
var lineStates = statefile.NewSet("linetest", nil)

type lineV1 struct{ Total uint64 }
type lineV2 struct{ Total uint64 }

func init() {
	statefile.Register(lineStates, 1, saveLine[lineV1], loadLine[lineV1])
	statefile.Register(lineStates, 2, saveLine[lineV2], loadLine[lineV2])
	statefile.AddStep(lineStates, 1, 2, func(v lineV1) (lineV2, error) {
		panic("migration panics on purpose")
	})
}

func saveLine[T any](out *statefile.Out, v T) error {
	enc, err := out.Section("total")
	if err != nil {
		return err
	}
	return enc.Encode(v)
}

func loadLine[T any](in *statefile.In) (T, error) {
	var v T
	dec, err := in.Section("total")
	if err == nil {
		err = dec.Decode(&v)
	}
	return v, err
}

func (s *lineServer) save(w io.Writer) error {
	oldFault("save") // "panic:save": SaveState panics in the old process
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saves++
	return lineStates.Save(w, lineV1{s.total}, 0)
}

func (s *lineServer) load(r io.Reader) error {
	want := uint32(1)
	switch fault() {
	case "reject-state":
		return errors.New("state rejected on purpose")
	case "exit:load":
		os.Exit(7)
	case "panic:load":
		panic("load state panics on purpose")
	case "panic:migrate":
		want = 2
	}
	state, _, err := lineStates.Load(r, want)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.total = state.(lineV1).Total
	s.mu.Unlock()
	return nil
}

// fault reads what the test wants this new process to get wrong.
func fault() string {
	b, _ := os.ReadFile(os.Getenv(envFault))
	return strings.TrimSpace(string(b))
}

// applyFault arms the takeover steps with the fault the test asked for,
// "<what>:<step>": exit there, hang there, or send garbage or a truncated
// packet there instead of the next frame.
func applyFault(f string) {
	switch f {
	case "proto-version":
		protocolVersion = ProtocolVersion + 1
	case "proto-older":
		protocolVersion = ProtocolVersion - 1
	case "fdlimit":
		lowerFdLimit(0)
	}
	what, step, ok := strings.Cut(f, ":")
	if !ok {
		return
	}
	testHook = func(s string, ch *channel) {
		if s != step {
			return
		}
		switch what {
		case "exit":
			os.Exit(7)
		case "hang":
			select {}
		case "garbage":
			ch.Conn().Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		case "truncated":
			ch.Conn().Write([]byte{byte(wire.TypeHello), 0, 0, 0, 0, 0, 1, 0, 'H', 'O'})
		case "fdlimit":
			lowerFdLimit(3)
		}
	}
}

// lowerFdLimit leaves room for only room more fds (0: for a few dozen,
// whatever is open now). Below the fds already open, the kernel drops the
// fds of SCM_RIGHTS that do not fit and flags MSG_CTRUNC.
func lowerFdLimit(room uint64) {
	open, _, _, _ := fdUsage()
	lim := uint64(open) + room
	if room == 0 {
		lim = uint64(open) + 100
	}
	unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: lim, Max: lim})
}

// testMode is the mode of every server of the chain.
func testMode() Mode {
	switch {
	case os.Getenv(envListenersOnly) != "":
		return ListenersOnly
	case os.Getenv(envRolling) != "":
		return Rolling
	}
	return AllAtOnce
}

func testStragglers() Stragglers {
	if os.Getenv(envCloseStragglers) != "" {
		return CloseStragglers
	}
	return DrainStragglers
}

func serverMain() {
	reporter()
	// Before anything can take long, as a real server does, so that a
	// stop is never lost.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	if inherited != nil {
		barrier("main") // before New: only the library's init guards SIGHUP here
	}
	installHooks()
	srv := &lineServer{}
	listenersOnly := testMode() == ListenersOnly
	up, err := New(Options{
		Mode:           testMode(),
		MoveTimeout:    envDuration(envMoveTimeout, 0),
		Stragglers:     testStragglers(),
		Version:        "test",
		PIDFile:        os.Getenv(envPIDFile),
		UpgradeTimeout: envDuration(envUpgradeTimeout, 5*time.Second),
		PauseTimeout:   envDuration(envPauseTimeout, 3*time.Second),
		ParkTimeout:    2 * time.Second,
		App:            testApp(),
		SaveState:      srv.save,
		LoadState:      testLoad(srv),
		Resume:         srv.serve,
		NoSignal:       true,
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Supervisor:     testSupervisor(),
		ControlSocket:  os.Getenv(envControl),
	})
	if err != nil {
		report("error %d %v", os.Getpid(), err)
		os.Exit(1)
	}
	ln, err := up.Listen("tcp", os.Getenv(envAddr))
	if err == nil {
		err = up.Ready(context.Background())
	}
	if err != nil {
		report("error %d %v", os.Getpid(), err)
		os.Exit(1)
	}
	go func() {
		for {
			c, err := ln.AcceptConn()
			if err != nil {
				return
			}
			go srv.serve(c, nil)
		}
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			go func() {
				// The test may bound this upgrade alone (setUpgradeTimeout).
				req := UpgradeRequest{Timeout: fileDuration("upgrade-timeout")}
				if _, err := up.UpgradeWith(context.Background(), req); err != nil {
					report("failed %d %v", os.Getpid(), err)
				}
			}()
		}
	}()
	srv.mu.Lock()
	total := srv.total
	srv.mu.Unlock()
	report("ready %d %s %d", os.Getpid(), ln.Addr(), total)
	select {
	case <-up.Exit():
		supervisorLine("exit")
	case <-stop:
		srv.stop(up)
		return
	}
	st := up.LastUpgrade()
	timed := st.Connected > 0 && st.Fds > 0 && st.Park > 0 && st.Parked > 0 && st.State > 0 && st.Ready > 0 &&
		st.Commit > 0
	report("exit %d %d %d %t %d", os.Getpid(), len(up.Conns()), st.Conns, timed, st.Early)
	if listenersOnly || len(up.Conns()) > 0 {
		// The connections stayed here: serve them until their clients go.
		for len(up.Conns()) > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		report("drained %d", os.Getpid())
	}
	barrier("linger")
	up.Exiting()
}

// stop is what the server does on SIGTERM: if it owns the state, it
// saves it to the state file and says "saved <pid> <total>"; if a
// successor does, it says "stopped <pid> handed-over" and saves nothing.
func (s *lineServer) stop(up *Upgrader) {
	if err := up.Stop(); err != nil {
		report("stopped %d handed-over %v", os.Getpid(), err)
		return
	}
	// Locked for good: no client may be told of a request the snapshot
	// misses, in the moment before the process exits.
	s.mu.Lock()
	err := statefile.WriteFile(os.Getenv(envState), func(w io.Writer) error {
		return lineStates.Save(w, lineV1{s.total}, 0)
	})
	if err != nil {
		report("error %d save: %v", os.Getpid(), err)
		return
	}
	report("saved %d %d", os.Getpid(), s.total)
}

// fileDuration reads a duration from the file name in TMPDIR; 0 if
// there is none.
func fileDuration(name string) time.Duration {
	b, _ := os.ReadFile(filepath.Join(os.Getenv("TMPDIR"), name))
	d, _ := time.ParseDuration(strings.TrimSpace(string(b)))
	return d
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

// installHooks arms the steps of a handoff with what the test asked for:
// the new process's fault, the old process's fault, pauses at barriers
// and probes.
func installHooks() {
	if inherited != nil { // started by an upgrade
		applyFault(fault())
	}
	prev := testHook
	testHook = func(step string, ch *channel) {
		if strings.Contains(","+os.Getenv(envProbe)+",", ","+step+",") {
			runProbe(step)
		}
		if strings.Contains(","+os.Getenv(envPause)+",", ","+step+",") {
			barrier(step)
		}
		oldFault(step)
		if prev != nil {
			prev(step, ch)
		}
	}
}

// barrier says "paused <pid> <step>" and waits until the test creates
// the file go-<step>, if the test asked for a pause there.
func barrier(step string) {
	if !strings.Contains(","+os.Getenv(envPause)+",", ","+step+",") {
		return
	}
	hold(step)
}

// hold says "paused <pid> <step>" and waits until the test creates the
// file go-<step> (harness.release).
func hold(step string) {
	report("paused %d %s", os.Getpid(), step)
	path := filepath.Join(os.Getenv("TMPDIR"), "go-"+step)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// oldFault applies the old process's fault, read from the file oldfault
// when the step comes: "late:decide" makes the old process reach its
// commit point only once its upgrade has timed out.
func oldFault(step string) {
	b, _ := os.ReadFile(filepath.Join(os.Getenv("TMPDIR"), "oldfault"))
	what, at, _ := strings.Cut(strings.TrimSpace(string(b)), ":")
	if at != step {
		return
	}
	switch what {
	case "late":
		time.Sleep(envDuration(envUpgradeTimeout, 5*time.Second) + 100*time.Millisecond)
	case "panic":
		panic("the old process's " + step + " panics on purpose")
	}
}

// probeMain is a program a server starts during an upgrade: it prints
// what it inherited of the handoff, which must be nothing: any socket fd,
// and the variable that names the fds.
func probeMain() {
	n := 0
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		if strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	_, env := os.LookupEnv(envFds)
	fmt.Printf("sockets=%d env=%t", n, env)
}

// runProbe starts a probe and reports what it saw, as "probe <pid> <where> <what>".
func runProbe(where string) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=probe")
	out, err := cmd.Output()
	if err != nil {
		out = []byte("error=" + strings.ReplaceAll(err.Error(), " ", "_"))
	}
	report("probe %d %s %s", os.Getpid(), where, out)
}

// harness runs a chain of server processes for one test.
type harness struct {
	t      *testing.T
	dir    string
	events chan string
	addr   string
	pid    int
	pgid   int
	env    []string
	logs   syncBuffer
	exit   []string       // the old process's last "exit" event: pid, kept, handed over, phases timed, early
	seen   sync.Map       // pids that sent events: a new process may be in a group of its own
	paused map[string]int // "paused" events read and not yet awaited: step -> pid
}

// syncBuffer collects the servers' logs for failure messages.
type syncBuffer struct {
	mu    sync.Mutex
	b     strings.Builder
	wrote chan struct{} // closed at the next Write; made by waitFor
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wrote != nil {
		close(s.wrote)
		s.wrote = nil
	}
	return s.b.Write(p)
}

// waitFor waits until the logs hold text and reports whether they do; d
// of clock is a safety net. A process's last line can still be in the
// pipe after the process has gone (or its events have come).
func (s *syncBuffer) waitFor(text string, d time.Duration) bool {
	deadline := time.After(d)
	for {
		s.mu.Lock()
		if strings.Contains(s.b.String(), text) {
			s.mu.Unlock()
			return true
		}
		if s.wrote == nil {
			s.wrote = make(chan struct{})
		}
		wrote := s.wrote
		s.mu.Unlock()
		select {
		case <-wrote:
		case <-deadline:
			return strings.Contains(s.String(), text)
		}
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer starts the first server of a chain; env adds to the
// environment of every process of it.
func startServer(t *testing.T, env ...string) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), events: make(chan string, 64), env: env, paused: map[string]int{}}
	evPath := h.dir + "/events"
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: evPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := pc.Read(buf)
			if err != nil {
				close(h.events)
				return
			}
			h.events <- string(buf[:n])
		}
	}()
	if err := os.Symlink(os.Args[0], h.dir+"/current"); err != nil {
		t.Fatal(err)
	}
	cmd := testCommand(h, "server")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.pgid = cmd.Process.Pid
	go cmd.Wait()
	t.Cleanup(func() {
		h.killAll()
		pc.Close()
		if t.Failed() {
			t.Logf("server logs:\n%s", h.logs.String())
		}
	})
	f := h.expect("ready")
	h.pid, _ = strconv.Atoi(f[1])
	h.addr = f[2]
	return h
}

// next waits for the next event.
func (h *harness) next() []string {
	h.t.Helper()
	select {
	case ev, ok := <-h.events:
		if !ok {
			h.t.Fatal("event socket closed")
		}
		return h.note(ev)
	case <-time.After(60 * time.Second):
		h.t.Fatal("no event in 60s")
	}
	return nil
}

// note splits an event and remembers its pid and, for "paused", its step.
func (h *harness) note(ev string) []string {
	f := strings.Fields(ev)
	if len(f) > 1 {
		if pid, err := strconv.Atoi(f[1]); err == nil {
			h.seen.Store(pid, true)
			if f[0] == "paused" && len(f) > 2 {
				h.paused[f[2]] = pid
			}
		}
	}
	return f
}

// expect waits for the next event and checks its kind.
func (h *harness) expect(kind string) []string {
	h.t.Helper()
	f := h.next()
	if f[0] != kind {
		h.t.Fatalf("event %q, want %q", strings.Join(f, " "), kind)
	}
	return f
}

// deploy points the "current" symlink at target, as a deployment does.
func (h *harness) deploy(target string) {
	tmp := h.dir + "/current.new"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Rename(tmp, h.dir+"/current"); err != nil {
		h.t.Fatal(err)
	}
}

// pidFile reads the servers' PID file.
func (h *harness) pidFile() int {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.dir, "pid"))
	if err != nil {
		h.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		h.t.Fatalf("PID file: %v", err)
	}
	return pid
}

// awaitPaused waits for a process to say it is paused at step (other
// events are skipped) and returns its pid.
func (h *harness) awaitPaused(step string) int {
	h.t.Helper()
	for {
		if pid, ok := h.paused[step]; ok {
			delete(h.paused, step)
			return pid
		}
		h.next()
	}
}

// release lets every process paused at step go on.
func (h *harness) release(step string) {
	if err := os.WriteFile(filepath.Join(h.dir, "go-"+step), nil, 0o600); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) setOldFault(f string) {
	if err := os.WriteFile(filepath.Join(h.dir, "oldfault"), []byte(f), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// setUpgradeTimeout bounds the next upgrades to d ("" for the Options'
// UpgradeTimeout).
func (h *harness) setUpgradeTimeout(d string) {
	if err := os.WriteFile(filepath.Join(h.dir, "upgrade-timeout"), []byte(d), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) setFault(f string) {
	if err := os.WriteFile(h.dir+"/fault", []byte(f), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// upgrade triggers an upgrade and waits for its outcome: the new pid, or
// 0 and the failure line if it failed.
func (h *harness) upgrade() (int, string) {
	h.t.Helper()
	if err := syscall.Kill(h.pid, syscall.SIGHUP); err != nil {
		h.t.Fatal(err)
	}
	return h.awaitUpgrade()
}

// awaitUpgrade waits for the end of an upgrade already triggered.
func (h *harness) awaitUpgrade() (int, string) {
	h.t.Helper()
	var ready, exited int
	for {
		ev := h.next()
		pid, _ := strconv.Atoi(ev[1])
		switch ev[0] {
		case "failed":
			return 0, strings.Join(ev, " ")
		case "ready":
			ready = pid
		case "exit":
			if pid != h.pid {
				h.t.Fatalf("pid %d exited, expected old pid %d", pid, h.pid)
			}
			exited = pid
			h.exit = ev
		case "error":
			continue // the failed new process said why; the old one says "failed"
		}
		if ready != 0 && exited != 0 {
			h.pid = ready
			return ready, ""
		}
	}
}

// killAll ends every process of the chain: they share the first one's
// process group.
func (h *harness) killAll() {
	if h.pgid > 0 {
		syscall.Kill(-h.pgid, syscall.SIGKILL)
	}
	h.seen.Range(func(pid, _ any) bool {
		syscall.Kill(pid.(int), syscall.SIGKILL)
		return true
	})
}

func testCommand(h *harness, role string) *exec.Cmd {
	cmd := exec.Command(h.dir+"/current", "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"="+role, envEvents+"="+h.dir+"/events",
		envFault+"="+h.dir+"/fault", envAddr+"=127.0.0.1:0", "TMPDIR="+h.dir,
		envPIDFile+"="+h.dir+"/pid", envState+"="+h.dir+"/state",
		// Safety nets, not what a test measures: a race-built chain on a
		// loaded machine takes seconds to start and connect. A test of a
		// timeout sets it in env (the last value counts) and makes the
		// peer hang, never merely be slow.
		envUpgradeTimeout+"=30s", envPauseTimeout+"=10s")
	cmd.Env = append(cmd.Env, h.env...)
	cmd.Stderr = &h.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}
