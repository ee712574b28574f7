//go:build e2epod

package e2e

// The takeover by a peer between the containers of a real pod: the pair
// of kubernetes/pod.yaml with takeover.yaml, played by podman, its idle
// container's image changed as the kubelet does (stop, remove, run in the
// pod with the pod's volumes: NOTES-facts.md (d)), under load. Every
// outcome is exact: which container serves, the chain's generation, each
// reply, each connection.

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// pdfVersion is what VERSION answers in each image.
var pdfVersion = map[string]string{"v1": "v1.0.0", "v2": "v2.0.0"}

// takeover changes the idle container's image to version's and waits
// until it has taken over from the serving one, which then idles. gen is
// the chain's generation the new process must have (1 after the pod's
// start); conns, how many connections the old one must have handed over
// at least.
func (p *pair) takeover(t *testing.T, serving, idle, version string, gen, conns int) {
	t.Helper()
	idles := strings.Count(logs(t, serving), lineIdle)
	p.replace(t, idle, p.image(version), "", nil)
	log := waitLines(t, idle, 1, linePeer, lineServing)
	if !strings.Contains(log, lineUpgraded) {
		t.Fatalf("%s serves without having taken over:\n%s", idle, log)
	}
	old := waitLines(t, serving, idles+1, lineIdle)
	st := status(t, idle)
	if st["phase"] != "serving" || st["generation"] != strconv.Itoa(gen) {
		t.Fatalf("%s after taking over: phase %q generation %q, want serving %d", idle, st["phase"], st["generation"], gen)
	}
	if n := lastHandedOver(t, old); n < conns {
		t.Fatalf("%s handed over %d connections, want at least %d (every persistent one)", serving, n, conns)
	}
}

// lastHandedOver is conns= of the last "handoff: handed over" line.
func lastHandedOver(t *testing.T, log string) int {
	t.Helper()
	i := strings.LastIndex(log, `msg="handoff: handed over"`)
	if i < 0 {
		t.Fatalf("no handover in the log:\n%s", log)
	}
	line, _, _ := strings.Cut(log[i:], "\n")
	return atoi(t, field(t, line, "handed over", "conns"))
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// noStaleState fails if a process of the pair took the shared state file
// for one a crashed server left: every process is pid 1, and only a cold
// start reads the marker (NOTES-facts.md); a takeover never does.
func noStaleState(t *testing.T, ctrs ...string) {
	t.Helper()
	for _, c := range ctrs {
		if l := logs(t, c); strings.Contains(l, lineStaleMark) || strings.Contains(l, "stale") {
			t.Errorf("%s read the state file as stale:\n%s", c, l)
		}
	}
}

const loadConns = 100

// TestTurnTakingPair: the pair upgrades in place five times, v1 -> v2 ->
// v1 -> v2 -> v1 -> v2, each time by a change of the idle container's
// image, under the pdf load: every takeover commits, every request is
// answered once and right, and the connections are the ones opened before
// the first (the witness is answered by each version in turn on its one
// connection, with its request count carried along).
func TestTurnTakingPair(t *testing.T) {
	p := playPair(t, nil)
	serving, idle := p.roles(t)
	w := p.witness(t)
	w.version(t, pdfVersion["v1"])
	l := p.startLoad(t, serving, loadConns, 20, 60*time.Second)
	for i, v := range []string{"v2", "v1", "v2", "v1", "v2"} {
		p.takeover(t, serving, idle, v, i+2, loadConns)
		serving, idle = idle, serving
		w.version(t, pdfVersion[v])
		if st := status(t, serving); !strings.HasPrefix(st["committed"], strconv.Itoa(i+2)+" ") {
			t.Fatalf("%s: committed %q, want %d takeovers in the chain", serving, st["committed"], i+2)
		}
	}
	r := l.finish(t)
	if r.Versions[pdfVersion["v1"]] == 0 || r.Versions[pdfVersion["v2"]] == 0 {
		t.Errorf("pdfload saw versions %v: want both", r.Versions)
	}
	noStaleState(t, serving, idle)
}

// TestBrokenImage: a new image that exits at once, and one whose binary
// is another application (it reaches the takeover and is refused), are
// rolled back: the serving container serves on with every connection and
// nothing lost, and a good image then takes over as if nothing happened.
func TestBrokenImage(t *testing.T) {
	p := playPair(t, nil)
	serving, idle := p.roles(t)
	w := p.witness(t)
	l := p.startLoad(t, serving, loadConns, 20, 60*time.Second)
	before := status(t, serving)

	p.replace(t, idle, probeImage, "/bin/podprobe", []string{"exit", "3"})
	if code := exited(t, idle); code != "3" {
		t.Fatalf("the image that exits at once exited %s, want 3", code)
	}
	if _, err := podman("rm", idle); err != nil {
		t.Fatal(err)
	}
	p.run(t, idle, p.image("v2"), "/bin/httpd", []string{"-listen", "0.0.0.0:7070", "-control", "/tmp/handoff.ctl"})
	code := exited(t, idle)
	t.Logf("httpd in pdf's place exited %s:\n%s", code, logs(t, idle))
	if code == "0" {
		t.Fatalf("httpd in pdf's place exited 0: want a failure")
	}
	after := status(t, serving)
	t.Logf("the serving container after the refusal: %v", after)
	if after["phase"] != "serving" || after["generation"] != before["generation"] || after["committed"] != before["committed"] {
		t.Fatalf("%s changed: %v before, %v after", serving, before, after)
	}
	if !strings.Contains(after["rolled back"], "other_app=1") {
		t.Errorf("%s: rolled back %q, want other_app=1", serving, after["rolled back"])
	}
	w.version(t, pdfVersion["v1"])
	if n := connsOf(t, serving); n < loadConns {
		t.Fatalf("%s serves %d connections after the refusal, want at least %d", serving, n, loadConns)
	}

	if _, err := podman("rm", idle); err != nil {
		t.Fatal(err)
	}
	p.run(t, idle, p.image("v2"), "", nil)
	waitLines(t, idle, 1, linePeer, lineServing)
	waitLines(t, serving, 1, lineIdle)
	w.version(t, pdfVersion["v2"])
	l.finish(t)
}

// TestNewKilledBeforeCommit: the new container is killed while the
// takeover waits for a connection to park (its handler blocked on a reply
// its client does not read, with a park timeout far longer than the test
// needs): the serving container rolls back, serves on, and loses nothing,
// the stuck connection's replies included.
func TestNewKilledBeforeCommit(t *testing.T) {
	p := playPair(t, func(s *corev1.PodSpec) {
		for i := range s.Containers {
			s.Containers[i].Args = append(s.Containers[i].Args, "-park-timeout", "10s")
		}
	})
	serving, idle := p.roles(t)
	w := p.witness(t)
	// No churn: a connection made during the held takeover waits for the
	// park timeout, as long as pdfload waits for a new connection's replies.
	l := p.startLoad(t, serving, loadConns, 0, 90*time.Second)
	s := p.stuckConn(t)

	p.replace(t, idle, p.image("v2"), "", nil)
	waitFor(t, serving+" upgrading", 60*time.Second, func() (bool, string) {
		st := status(t, serving)
		return st["phase"] == "upgrading", fmt.Sprint(st)
	})
	if _, err := podman("kill", idle); err != nil {
		t.Fatal(err)
	}
	if code := exited(t, idle); code != "137" {
		t.Fatalf("the killed container exited %s, want 137 (SIGKILL)", code)
	}
	var st map[string]string
	waitFor(t, serving+" serving again", 60*time.Second, func() (bool, string) {
		st = status(t, serving)
		return st["phase"] == "serving", fmt.Sprint(st)
	})
	t.Logf("the serving container after the kill: %v", st)
	// One rollback, for the peer's exit: the park ends when the peer's
	// channel does, not at the park timeout.
	if st["rolled back"] != "exited=1" ||
		!strings.HasPrefix(st["committed"], "1 ") {
		t.Errorf("%s: rolled back %q committed %q, want one rollback and only the pod's start committed",
			serving, st["rolled back"], st["committed"])
	}
	s.finish(t)
	w.version(t, pdfVersion["v1"])
	l.finish(t)
}

// TestHTTPDUnderWrk: the pair running httpd (full mode), under wrk's
// keep-alive load, upgraded in place three times: no socket error, no
// answer but 2xx, and a keep-alive witness connection answered by each
// version in turn.
func TestHTTPDUnderWrk(t *testing.T) {
	p := playPair(t, func(s *corev1.PodSpec) {
		for i := range s.Containers {
			c := &s.Containers[i]
			c.Command = []string{"/bin/httpd"}
			c.Args = httpdArgs("v1")
			c.Ports = nil
		}
	})
	serving, idle := p.roles(t)
	h := p.httpWitness(t)
	h.get(t, "v1")
	const conns = 50
	wk := p.startWrk(t, "http://127.0.0.1:8080/", conns)
	waitFor(t, fmt.Sprintf("wrk's %d connections", conns), 60*time.Second, func() (bool, string) {
		n := connsOf(t, serving)
		return n >= conns+1, fmt.Sprintf("%d connections", n)
	})
	for i, v := range []string{"v2", "v1", "v2"} {
		idles := strings.Count(logs(t, serving), lineIdle)
		p.replace(t, idle, p.image(v), "/bin/httpd", httpdArgs(v))
		waitLines(t, idle, 1, linePeer, lineServing)
		waitLines(t, serving, idles+1, lineIdle)
		if st := status(t, idle); st["generation"] != strconv.Itoa(i+2) {
			t.Fatalf("%s: generation %q, want %d", idle, st["generation"], i+2)
		}
		serving, idle = idle, serving
		h.get(t, v)
	}
	wk.finish(t)
}

func httpdArgs(version string) []string {
	return []string{"-listen", "0.0.0.0:8080", "-control", "/tmp/handoff.ctl", "-upgrade-mode", "full", "-version", version}
}

// httpWitness is one keep-alive HTTP connection held through every takeover.
type httpWitness struct {
	w *witness
}

func (p *pair) httpWitness(t *testing.T) *httpWitness {
	t.Helper()
	c := p.dial(t, "127.0.0.1:8080")
	return &httpWitness{&witness{c: c, r: bufio.NewReader(c)}}
}

// get asks GET / on the witness connection: version answers, pid 1.
func (h *httpWitness) get(t *testing.T, version string) {
	t.Helper()
	h.w.c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(h.w.c, "GET / HTTP/1.1\r\nHost: pod\r\n\r\n"); err != nil {
		t.Fatalf("http witness: %v (the connection did not survive)", err)
	}
	resp, err := http.ReadResponse(h.w.r, nil)
	if err != nil {
		t.Fatalf("http witness: %v (the connection did not survive)", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || strings.TrimSpace(string(body)) != version+" 1" || resp.Close {
		t.Fatalf("http witness: %s %q (%v, close=%v), want 200 %q on a kept-alive connection",
			resp.Status, body, err, resp.Close, version+" 1")
	}
}
