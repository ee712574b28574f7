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
// such a server; they report to the test over a unixgram socket. The
// same server runs in a chain in one process (startInProcess,
// inproc_test.go), with these settings in a map instead of its
// environment and its events on a channel.
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
	envMoveTimeout = "HANDOFF_TEST_MOVE_TIMEOUT"
	envParkTimeout = "HANDOFF_TEST_PARK_TIMEOUT"
	// envBefore names a file that Options.BeforeUpgrade reads at each
	// upgrade: "fail" makes it fail; it says "before <pid>" either way.
	envBefore          = "HANDOFF_TEST_BEFORE"
	envCloseStragglers = "HANDOFF_TEST_CLOSE_STRAGGLERS"
	// envPause lists steps at which a process says "paused" and waits
	// for the test; see barrier. A step is one the old process's
	// Progress reaches ("early", "decide"; see oldSteps), one a tap on
	// the new process's channel reaches ("hello", "first-batch"; see
	// tapChannel), one the env reaches (in one process: "connected",
	// "committed", "passing", "exiting"), one LoadState reaches ("conns",
	// "state"), or the server's own ("main", "apply", "linger").
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
	// envTakeover and envTakeoverToken set Options.TakeoverSocket and
	// Options.TakeoverTokenFile (takeover_test.go).
	envTakeover      = "HANDOFF_TEST_TAKEOVER"
	envTakeoverToken = "HANDOFF_TEST_TAKEOVER_TOKEN"
	envPeer          = "HANDOFF_TEST_PEER" // set for a server the test starts as a peer
)

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "server":
		serverMain(osProc())
		return
	case "probe":
		probeMain()
		return
	case "runner":
		runnerMain(osProc())
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

// proc is one server of a chain as the server sees itself: a process
// of its own (osProc: the test binary re-run, its settings in its
// environment), or a goroutine of the test process acting on the OS
// through a fake env (inproc_test.go).
type proc struct {
	pid    int
	getenv func(string) string
	env    *env         // what its Upgrader acts on
	inh    *inheritance // what its old process passed; nil in a first one
	// report sends one event line to the test.
	report func(format string, args ...any)
	// hold says "paused <pid> <step>" and waits for the test's release.
	hold func(step string)
	// exit ends the process with code; it does not return.
	exit func(code int)
	// dead is closed when an in-process server is killed; nil for a
	// real one, which a kill ends at once.
	dead <-chan struct{}
	// atDeath is called with what a kill must close: for a real
	// process the kernel does it.
	atDeath func(func())
	logs    io.Writer
	fake    bool
	// peer: nobody in the chain started it; it takes over through the
	// takeover socket (takeover_test.go).
	peer bool
	// garble, for an in-process peer, sends garbage to its old process
	// on the handoff channel, as a peer broken mid-move would.
	garble    func()
	garbleOne sync.Once
}

// isNew reports whether the server takes over from another: the test's
// faults apply to it.
func (p *proc) isNew() bool { return p.inh != nil || p.peer }

// isDead reports whether the server was killed in-process.
func (p *proc) isDead() bool { return isClosed(p.dead) }

// isClosed reports whether c is closed; a nil c never is.
func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// osProc is the server that this process is.
func osProc() *proc {
	reporter() // the event socket first, so that the test's fd counts are steady
	return &proc{
		pid: os.Getpid(), getenv: os.Getenv, env: processEnv, inh: startInheritance, peer: os.Getenv(envPeer) != "",
		report: func(format string, args ...any) {
			if c := reporter(); c != nil {
				fmt.Fprintf(c, format, args...)
			}
		},
		hold:    holdFile,
		exit:    os.Exit,
		atDeath: func(func()) {},
		logs:    os.Stderr,
	}
}

// lineServer is the application of the test server: each request line
// "<x>" gets "<x> <n> <pid>", n counting this connection's earlier
// requests, and a global total that travels as state.
type lineServer struct {
	p     *proc
	mu    sync.Mutex
	total uint64
	saves uint64 // SaveState calls, for envCarry
	base  uint64 // the total Precopy.Save read (envPrecopy)
}

func (s *lineServer) serve(c *Conn, state []byte) {
	var n uint64
	if len(state) >= 8 {
		n = binary.BigEndian.Uint64(state)
	}
	if s.gone(c) {
		return
	}
	if state != nil && s.p.fault() == "exit:move" {
		// The first connection a Rolling move brings is resumed here: the
		// new process dies mid-move, the old one serving the rest.
		s.p.exit(7)
	}
	if state != nil && s.p.fault() == "garbage:move" && s.p.garble != nil {
		s.p.garbleOne.Do(s.p.garble) // alive, it breaks the move
	}
	carry := s.apply(state)
	for {
		if s.gone(c) {
			return
		}
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
		s.takeLong(string(line))
		if string(line) == "quit" {
			fmt.Fprintf(c, "bye\n")
			c.Close()
			return
		}
		if _, err := fmt.Fprintf(c, "%s %d %d\n", line, n, s.p.pid); err != nil {
			c.Close()
			return
		}
		n++
	}
}

// takeLong makes the requests "sleep-<ms>" and "hold-<name>" take long:
// they keep their connection from parking meanwhile.
func (s *lineServer) takeLong(line string) {
	if ms, ok := strings.CutPrefix(line, "sleep-"); ok {
		d, _ := strconv.Atoi(ms)
		select {
		case <-time.After(time.Duration(d) * time.Millisecond):
		case <-s.p.dead: // killed in-process: it sleeps no more
		}
	}
	if name, ok := strings.CutPrefix(line, "hold-"); ok {
		// As long as the test needs, however loaded the machine: held
		// until the test releases it.
		s.p.hold("hold-" + name)
	}
}

// gone closes c if its server was killed in-process: the kernel would
// have closed it, whenever its handler got it.
func (s *lineServer) gone(c *Conn) bool {
	if !s.p.isDead() {
		return false
	}
	c.Close()
	return true
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
	c := &lineCarry{on: s.p.getenv(envCarry) != ""}
	if !c.on {
		return c
	}
	if len(state) == 16 {
		s.p.barrier("apply")
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
	s.p.called("save")
	s.p.oldFault("save") // "panic:save": SaveState panics in the old process
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saves++
	return lineStates.Save(w, lineV1{s.total}, 0)
}

// LoadState is where the takeover's steps "conns" (the connections have
// come; it starts) and "state" (it returns) are reached, without a hook
// in the library: a probe, a pause, a hang or an exit there.
func (s *lineServer) load(r io.Reader) error {
	s.p.called("load")
	s.p.step("conns")
	want := uint32(1)
	switch s.p.fault() {
	case "reject-state":
		return errors.New("state rejected on purpose")
	case "exit:load":
		s.p.exit(7)
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
	s.p.step("state")
	return nil
}

// step is a new process's step of the takeover that LoadState reaches.
func (p *proc) step(name string) {
	if p.reach(name) {
		panic("killed in-process") // LoadState's panic: the takeover fails, its process is dead
	}
}

// reach is a new process's step of the takeover, which LoadState or a tap
// reaches: the test's probe, pause, and fault ("hang:<step>",
// "exit:<step>"). It reports whether the process hung there until it was
// killed in-process.
func (p *proc) reach(name string) (killed bool) {
	p.probe(name)
	p.barrier(name)
	switch p.fault() {
	case "hang:" + name:
		<-p.dead // for ever, unless killed in-process
		return true
	case "exit:" + name:
		p.exit(7)
	}
	return false
}

// probe starts a probe at step if the test asked for one there.
func (p *proc) probe(step string) {
	if listed(p.getenv(envProbe), step) {
		runProbe(p, step)
	}
}

// fault reads what the test wants this new process to get wrong.
func (p *proc) fault() string {
	b, _ := os.ReadFile(p.getenv(envFault))
	return strings.TrimSpace(string(b))
}

// processFault changes this new process as the test asked: the protocol
// version it speaks, or its fd limit. A real process's only: they are the
// test binary's globals and limits.
func processFault(f string) {
	switch f {
	case "proto-version":
		protocolVersion = ProtocolVersion + 1
	case "proto-older":
		protocolVersion = ProtocolVersion - 1
	case "fdlimit":
		lowerFdLimit(100)
	}
}

// badPacket is what a new process whose fault is "garbage:<step>" or
// "truncated:<step>" sends instead of its next frame.
func badPacket(fault string) []byte {
	if strings.HasPrefix(fault, "garbage") {
		return []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	return []byte{byte(wire.TypeHello), 0, 0, 0, 0, 0, 1, 0, 'H', 'O'}
}

// lowerFdLimit leaves room for only room more fds, counting those of
// freed, which are open and about to be closed, as room: the limit is set
// just above the lowest room fd numbers left. Beyond it, the kernel drops
// the fds of SCM_RIGHTS that do not fit and flags MSG_CTRUNC.
func lowerFdLimit(room int, freed ...int) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	self := int(d.Fd())
	d.Close()
	used := map[int]bool{}
	for _, n := range names {
		fd, _ := strconv.Atoi(n)
		used[fd] = true
	}
	for _, fd := range append(freed, self) {
		delete(used, fd)
	}
	lim := 0
	for free := 0; free < room; lim++ {
		if !used[lim] {
			free++
		}
	}
	unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(lim), Max: uint64(lim)})
}

// testMode is the mode of every server of the chain.
func (p *proc) testMode() Mode {
	switch {
	case p.getenv(envListenersOnly) != "":
		return ListenersOnly
	case p.getenv(envRolling) != "":
		return Rolling
	}
	return AllAtOnce
}

func (p *proc) testStragglers() Stragglers {
	if p.getenv(envCloseStragglers) != "" {
		return CloseStragglers
	}
	return DrainStragglers
}

func serverMain(p *proc) {
	// Before anything can take long, as a real server does, so that a
	// stop is never lost.
	stop := make(chan os.Signal, 1)
	p.env.notify(stop, syscall.SIGTERM)
	if p.inh != nil && !p.fake {
		p.barrier("main") // before New: only the library's init guards SIGHUP here
	}
	if p.isNew() && p.fault() == "exit:start" {
		p.exit(7) // before it connects: as at the takeover's start
	}
	if p.inh != nil && !p.fake {
		processFault(p.fault())
	}
	if p.inh != nil && p.fault() == "previous-release" {
		previousRelease(p) // precopy_test.go
	}
	p.tapChannel()
	up, ln := p.start()
	srv := p.server(up).serve
	go func() {
		for {
			c, err := ln.AcceptConn()
			if err != nil {
				return
			}
			go srv(c, nil)
		}
	}()
	p.watchHUP(up)
	p.report("ready %d %s %d", p.pid, ln.Addr(), p.total(up))
	select {
	case <-up.Exit():
		supervisorLine("exit")
	case <-stop:
		p.server(up).stop(up)
		return
	case <-p.dead:
		return
	}
	p.exited(up)
}

// options are the Options of every server of the test chains.
func (p *proc) options(srv *lineServer) Options {
	return Options{
		Mode:           p.testMode(),
		MoveTimeout:    p.duration(envMoveTimeout, 0),
		Stragglers:     p.testStragglers(),
		Version:        "test",
		PIDFile:        p.getenv(envPIDFile),
		UpgradeTimeout: p.duration(envUpgradeTimeout, 5*time.Second),
		PauseTimeout:   p.duration(envPauseTimeout, 3*time.Second),
		ParkTimeout:    p.duration(envParkTimeout, 2*time.Second),
		App:            testApp(p),
		SaveState:      srv.save,
		LoadState:      testLoad(p, srv),
		Precopy:        testPrecopy(p, srv),
		Resume:         srv.serve,
		NoSignal:       true,
		Logger:         slog.New(slog.NewTextHandler(p.logs, nil)),
		Supervisor:     testSupervisor(),
		ControlSocket:  p.getenv(envControl),
		// A peer's settings: the socket, and a token file of its own
		// (the old process reads the same variable, its own file).
		TakeoverSocket:    p.getenv(envTakeover),
		TakeoverTokenFile: p.getenv(envTakeoverToken),
		BeforeUpgrade:     p.beforeUpgrade(),
	}
}

// beforeUpgrade is Options.BeforeUpgrade as envBefore asks, or nil.
func (p *proc) beforeUpgrade() func() error {
	path := p.getenv(envBefore)
	if path == "" {
		return nil
	}
	return func() error {
		p.report("before %d", p.pid)
		if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) == "fail" {
			return errors.New("not now, on purpose")
		}
		return nil
	}
}

// start makes the server's Upgrader, listens and takes over; it exits
// the process on failure.
func (p *proc) start() (*Upgrader, *Listener) {
	srv := &lineServer{p: p}
	up, err := newUpgrader(p.options(srv), p.env)
	if err != nil {
		p.report("error %d %v", p.pid, err)
		p.exit(1)
	}
	servers.Store(up, srv)
	// A carried value whose read panics in the old process at
	// "panic:carry" (oldFault), and whose restore panics in a new process
	// told "panic:restore".
	up.Carry("fault", func() float64 { p.oldFault("carry"); return 1 }, func(float64) {
		if p.fault() == "panic:restore" {
			panic("restore panics on purpose")
		}
	})
	ln, err := up.Listen("tcp", p.getenv(envAddr))
	if err == nil {
		p.atDeath(func() {
			ln.Close()
			for _, c := range up.Conns() {
				c.Close()
			}
		})
		err = up.Ready(context.Background())
	}
	if err != nil {
		p.report("error %d %v", p.pid, err)
		p.exit(1)
	}
	return up, ln
}

// servers maps each test server's Upgrader to its application.
var servers sync.Map

func (p *proc) server(up *Upgrader) *lineServer {
	srv, _ := servers.Load(up)
	return srv.(*lineServer)
}

func (p *proc) total(up *Upgrader) uint64 {
	srv := p.server(up)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.total
}

// watchHUP upgrades on each SIGHUP.
func (p *proc) watchHUP(up *Upgrader) {
	hup := make(chan os.Signal, 1)
	p.env.notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-hup:
			case <-p.dead: // in-process: it ends with its server
				return
			}
			go func() {
				// The test may bound this upgrade alone (setUpgradeTimeout).
				req := UpgradeRequest{Timeout: p.fileDuration("upgrade-timeout"), Progress: p.oldSteps}
				if _, err := up.UpgradeWith(context.Background(), req); err != nil {
					p.report("failed %d %v", p.pid, err)
				}
			}()
		}
	}()
}

// exited is the server's end once Exit is closed: it reports what the
// upgrade did, serves the connections that stayed until their clients
// go, and calls Exiting.
func (p *proc) exited(up *Upgrader) {
	st := up.LastUpgrade()
	timed := st.Connected > 0 && st.Fds > 0 && st.Park > 0 && st.Parked > 0 && st.State > 0 && st.Ready > 0 &&
		st.Commit > 0
	p.report("exit %d %d %d %t %d", p.pid, len(up.Conns()), st.Conns, timed, st.Early)
	if p.testMode() == ListenersOnly || len(up.Conns()) > 0 {
		// The connections stayed here: serve them until their clients go.
		for len(up.Conns()) > 0 {
			select {
			case <-p.dead:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		p.report("drained %d", p.pid)
	}
	p.barrier("linger")
	up.Exiting()
}

// stop is what the server does on SIGTERM: if it owns the state, it
// saves it to the state file and says "saved <pid> <total>"; if a
// successor does, it says "stopped <pid> handed-over" and saves nothing.
func (s *lineServer) stop(up *Upgrader) {
	if err := up.Stop(); err != nil {
		s.p.report("stopped %d handed-over %v", s.p.pid, err)
		return
	}
	if err := s.saveFile(); err != nil {
		s.p.report("error %d save: %v", s.p.pid, err)
	}
}

// saveFile saves the total to the state file and says "saved <pid>
// <total>". Once saved, the state is locked for good: no client may be
// told of a request the snapshot misses, in the moment before the
// process exits. If the save fails, the server serves on.
func (s *lineServer) saveFile() error {
	s.mu.Lock()
	err := statefile.WriteFile(s.p.getenv(envState), func(w io.Writer) error {
		return lineStates.Save(w, lineV1{s.total}, 0)
	})
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.p.report("saved %d %d", s.p.pid, s.total)
	// The lock is for good in a process that exits now; in one process
	// its end closes the connections first, then lets their handlers
	// find them closed.
	s.p.atDeath(s.mu.Unlock)
	return nil
}

// fileDuration reads a duration from the file name in TMPDIR; 0 if
// there is none.
func (p *proc) fileDuration(name string) time.Duration {
	b, _ := os.ReadFile(filepath.Join(p.getenv("TMPDIR"), name))
	d, _ := time.ParseDuration(strings.TrimSpace(string(b)))
	return d
}

func (p *proc) duration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(p.getenv(name)); err == nil {
		return d
	}
	return def
}

// oldSteps is the Progress of the upgrades the test triggers: it runs
// the old process's steps as the phases before them end, "early" once
// the early fds have gone (PhaseFds) and "decide" once the new process is
// ready, before the commit (PhaseReady): the test's probe, pause and old
// process's fault there.
func (p *proc) oldSteps(e Event) {
	step := map[string]string{PhaseFds: "early", PhaseReady: "decide"}[e.Phase]
	if step == "" {
		return
	}
	p.probe(step)
	p.barrier(step)
	p.oldFault(step)
}

// barrier says "paused <pid> <step>" and waits until the test releases
// step, if the test asked for a pause there.
func (p *proc) barrier(step string) {
	if !listed(p.getenv(envPause), step) {
		return
	}
	p.hold(step)
}

// holdFile says "paused <pid> <step>" and waits until the test creates
// the file go-<step> (harness.release).
func holdFile(step string) {
	p := osProc()
	p.report("paused %d %s", p.pid, step)
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
func (p *proc) oldFault(step string) {
	b, _ := os.ReadFile(filepath.Join(p.getenv("TMPDIR"), "oldfault"))
	what, at, _ := strings.Cut(strings.TrimSpace(string(b)), ":")
	if at != step {
		return
	}
	switch what {
	case "late":
		time.Sleep(p.duration(envUpgradeTimeout, 5*time.Second) + 100*time.Millisecond)
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
func runProbe(p *proc, where string) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=probe")
	out, err := cmd.Output()
	if err != nil {
		out = []byte("error=" + strings.ReplaceAll(err.Error(), " ", "_"))
	}
	p.report("probe %d %s %s", p.pid, where, out)
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
	fake   *fakeOS        // the chain's kernel, if it runs in this process
	// gates are the in-process barriers: closed on release.
	gatesMu sync.Mutex
	gates   map[string]chan struct{}
	// With envPrecopy: the "call" events, "<function> <pid>" (see
	// called), and the last "ready" event.
	calls []string
	ready []string
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

// note splits an event and remembers its pid and, for "paused", its
// step; a "call", and the last "ready".
func (h *harness) note(ev string) []string {
	f := strings.Fields(ev)
	if len(f) > 2 && f[0] == "call" {
		h.calls = append(h.calls, f[2]+" "+f[1])
	}
	if len(f) > 0 && f[0] == "ready" {
		h.ready = f
	}
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
	if h.fake != nil {
		g := h.gate(step)
		h.gatesMu.Lock()
		defer h.gatesMu.Unlock()
		select {
		case <-g:
		default:
			close(g)
		}
		return
	}
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
	if err := h.kill(h.pid, syscall.SIGHUP); err != nil {
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

// testVars is the environment every server of h's chain shares.
func testVars(h *harness) []string {
	return []string{envFault + "=" + h.dir + "/fault", envAddr + "=127.0.0.1:0", "TMPDIR=" + h.dir,
		envPIDFile + "=" + h.dir + "/pid", envState + "=" + h.dir + "/state",
		// Safety nets, not what a test measures: a race-built chain on a
		// loaded machine takes seconds to start and connect. A test of a
		// timeout sets it in env (the last value counts) and makes the
		// peer hang, never merely be slow.
		envUpgradeTimeout + "=30s", envPauseTimeout + "=10s"}
}

func testCommand(h *harness, role string) *exec.Cmd {
	cmd := exec.Command(h.dir+"/current", "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"="+role, envEvents+"="+h.dir+"/events")
	cmd.Env = append(append(cmd.Env, testVars(h)...), h.env...)
	cmd.Stderr = &h.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}
