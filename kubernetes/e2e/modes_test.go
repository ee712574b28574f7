//go:build e2epod

package e2e

// The takeover by a peer in the library's other two modes, in the pair of
// kubernetes/pod.yaml: Rolling (the listeners and the state at the commit,
// then each connection alone) and ListenersOnly (the listeners alone; the
// old process serves its connections until their clients leave). The
// mode is the old process's: the pdf server's -upgrade-mode, the same in
// both containers, as the manifest's args would say it.

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// withArgs appends args to every container's arguments.
func withArgs(args ...string) func(*corev1.PodSpec) {
	return func(s *corev1.PodSpec) {
		for i := range s.Containers {
			s.Containers[i].Args = append(s.Containers[i].Args, args...)
		}
	}
}

// The lines the modes add to the containers' logs.
const (
	lineMoveDone  = `msg="handoff: rolling move done"`
	lineDraining  = `msg=draining`
	lineDrainDone = `msg="drain done"`
)

// lastLine is the last line of log that holds msg.
func lastLine(t *testing.T, log, msg string) string {
	t.Helper()
	i := strings.LastIndex(log, msg)
	if i < 0 {
		t.Fatalf("no %s in the log:\n%s", msg, log)
	}
	line, _, _ := strings.Cut(log[i:], "\n")
	return line
}

// TestRollingPair: the pair in Rolling mode, under the pdf load, upgraded
// in place three times (v1 -> v2 -> v1 -> v2) by a change of the idle
// container's image. Each takeover commits, then every connection moves
// alone to the new container (none stays with the old one, none is
// closed); the old container idles, handed over, once the move has ended,
// holding no connection. Every request is answered once and right, on the
// connections opened before the first takeover (pdfload's verdict, and
// the witness answered by each version in turn with its count carried).
func TestRollingPair(t *testing.T) {
	p := playPair(t, withArgs("-upgrade-mode", "rolling"))
	serving, idle := p.roles(t)
	w := p.witness(t)
	w.version(t, pdfVersion["v1"])
	l := p.startLoad(t, serving, loadConns, 20, 60*time.Second)
	for i, v := range []string{"v2", "v1", "v2"} {
		gen := i + 2
		idles := strings.Count(logs(t, serving), lineIdle)
		p.replace(t, idle, p.image(v), "", nil)
		log := waitLines(t, idle, 1, linePeer, lineServing, lineMoveDone)
		if !strings.Contains(log, lineUpgraded) || !strings.Contains(log, "upgrade_mode=rolling") {
			t.Fatalf("%s serves without having taken over in rolling mode:\n%s", idle, log)
		}
		move := lastLine(t, log, lineMoveDone)
		t.Logf("takeover %d: %s", i+1, move)
		if moved := atoi(t, field(t, move, "rolling move done", "moved")); moved < loadConns+1 ||
			field(t, move, "rolling move done", "stayed_with_old") != "0" ||
			field(t, move, "rolling move done", "closed") != "0" {
			t.Fatalf("%s: %s: want every connection (at least %d) moved, none stayed or closed", idle, move, loadConns+1)
		}
		waitLines(t, serving, idles+1, lineIdle)
		old, st := status(t, serving), status(t, idle)
		if old["phase"] != "handed-over" || connsOf(t, serving) != 0 {
			t.Fatalf("%s after the move: phase %q with %d connections, want handed-over with none",
				serving, old["phase"], connsOf(t, serving))
		}
		if st["phase"] != "serving" || st["generation"] != strconv.Itoa(gen) ||
			!strings.HasPrefix(st["committed"], strconv.Itoa(gen)+" ") || st["rolled back"] != "0" {
			t.Fatalf("%s after taking over: %v, want serving, generation %d, %d committed and no rollback",
				idle, st, gen, gen)
		}
		if n := connsOf(t, idle); n < loadConns+1 {
			t.Fatalf("%s serves %d connections after the move, want at least %d", idle, n, loadConns+1)
		}
		serving, idle = idle, serving
		w.version(t, pdfVersion[v])
	}
	r := l.finish(t)
	if r.Versions[pdfVersion["v1"]] == 0 || r.Versions[pdfVersion["v2"]] == 0 {
		t.Errorf("pdfload saw versions %v: want both", r.Versions)
	}
	noStaleState(t, serving, idle)
}

// TestListenersOnlyPair: the pair in ListenersOnly mode. A takeover moves
// the listener alone: the old container serves the connections it had
// (the witnesses, answered by v1 on their first connections) for as long
// as their clients keep them (the drain timeout is far longer than the
// test), new connections reach the new container (v2), and once the last
// old client has closed, the old container's drain ends with nothing to
// close and it idles, handed over. A second takeover, back to v1, does
// the same the other way.
func TestListenersOnlyPair(t *testing.T) {
	p := playPair(t, withArgs("-upgrade-mode", "listeners", "-drain-timeout", "10m"))
	serving, idle := p.roles(t)
	for i, v := range []string{"v2", "v1"} {
		from := pdfVersion[map[string]string{"v2": "v1", "v1": "v2"}[v]]
		olds := []*witness{p.witness(t), p.witness(t)}
		for _, w := range olds {
			w.version(t, from)
		}
		idles := strings.Count(logs(t, serving), lineIdle)
		drains := strings.Count(logs(t, serving), lineDraining)
		p.replace(t, idle, p.image(v), "", nil)
		log := waitLines(t, idle, 1, linePeer, lineServing)
		if !strings.Contains(log, lineUpgraded) || !strings.Contains(log, "upgrade_mode=listeners") {
			t.Fatalf("%s serves without having taken over in listeners mode:\n%s", idle, log)
		}
		oldLog := waitLines(t, serving, drains+1, lineDraining)
		if d := lastLine(t, oldLog, lineDraining); field(t, d, "draining", "conns") != "2" {
			t.Fatalf("%s: %s, want the 2 witnesses' connections kept to drain", serving, d)
		}
		if st := status(t, idle); st["phase"] != "serving" || st["generation"] != strconv.Itoa(i+2) {
			t.Fatalf("%s after taking over: %v, want serving generation %d", idle, st, i+2)
		}
		// The old connections, still the old process's; a new one, the new's.
		for _, w := range olds {
			w.version(t, from)
		}
		fresh := p.witness(t)
		fresh.version(t, pdfVersion[v])
		if n := connsOf(t, serving); n != 2 {
			t.Fatalf("%s serves %d connections while it drains, want the 2 witnesses'", serving, n)
		}
		if n := connsOf(t, idle); n != 1 {
			t.Fatalf("%s serves %d connections, want the 1 made after the takeover", idle, n)
		}
		// One client leaves: the other is still served, the drain goes on.
		olds[0].c.Close()
		waitFor(t, serving+" serving the last witness alone", 60*time.Second, func() (bool, string) {
			n := connsOf(t, serving)
			return n == 1, fmt.Sprintf("%d connections", n)
		})
		olds[1].version(t, from)
		if strings.Count(logs(t, serving), lineIdle) != idles {
			t.Fatalf("%s idles while a client of its own is connected:\n%s", serving, logs(t, serving))
		}
		olds[1].c.Close()
		oldLog = waitLines(t, serving, idles+1, lineIdle)
		if d := lastLine(t, oldLog, lineDrainDone); field(t, d, "drain done", "closed") != "0" {
			t.Fatalf("%s: %s, want no connection closed by the server: every client left by itself", serving, d)
		}
		if st := status(t, serving); st["phase"] != "handed-over" || connsOf(t, serving) != 0 {
			t.Fatalf("%s after its drain: %v, want handed-over with no connection", serving, st)
		}
		fresh.version(t, pdfVersion[v])
		fresh.c.Close()
		serving, idle = idle, serving
	}
	noStaleState(t, serving, idle)
}

// TestListenersOnlyPairStart: the pair in ListenersOnly mode starts as in
// the other modes, the last started container taking over from the first
// at once, with no restart. In listeners mode the ledger reaches the new
// process only through -state; examples/pdf writes it in
// Options.BeforeUpgrade, so before a peer's takeover as before its own
// SIGHUP. Before that (until the first -snapshot) the new container
// refused to start ("statefile: open /var/lib/pdf/ledger: no such file or
// directory") and was restarted until a snapshot existed (7 to 11
// restarts under podman; the kubelet backs off 10 s, 20 s, ...).
func TestListenersOnlyPairStart(t *testing.T) {
	p := playPair(t, withArgs("-upgrade-mode", "listeners", "-drain-timeout", "10m"))
	serving, idle := p.roles(t)
	for _, c := range []string{serving, idle} {
		n, err := podman("inspect", c, "--format", "{{.RestartCount}}")
		if err != nil {
			t.Fatal(err)
		}
		if n != "0" || strings.Contains(logs(t, c), `msg="refusing to start"`) {
			t.Errorf("%s restarted %s times at the pod's start, want none; its log:\n%s", c, n, logs(t, c))
		}
	}
}
