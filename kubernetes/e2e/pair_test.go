//go:build e2epod

package e2e

// The turn-taking pair of kubernetes/pod.yaml run by podman, and what the
// takeover scenarios (takeover_test.go) do to it: replace one container's
// image as the kubelet does (NOTES-facts.md (d)), read the containers'
// logs and their control sockets, and reach the pod's network namespace.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// serverImage is kubernetes/build-image's image of this tree, built by
// TestMain under a name of the tests' own: :v1, :v2 and :idle.
const serverImage = "localhost/handoff-e2e"

// pdfload is the pdf load checker, built by TestMain.
var pdfload string

// buildServers builds the server images and pdfload from this tree.
func buildServers() error {
	build := exec.Command("../build-image")
	build.Env = append(os.Environ(), "IMAGE="+serverImage)
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("kubernetes/build-image: %w\n%s", err, out)
	}
	dir, err := os.MkdirTemp("", "e2e-pdfload-")
	if err != nil {
		return err
	}
	pdfload = filepath.Join(dir, "pdfload")
	if out, err := exec.Command("go", "-C", "../../examples", "build", "-o", pdfload, "./pdf/cmd/pdfload").CombinedOutput(); err != nil {
		return fmt.Errorf("go build pdfload: %w\n%s", err, out)
	}
	return nil
}

// pair is a pod made from kubernetes/pod.yaml with takeover.yaml.
type pair struct {
	pod   string
	spec  corev1.Container            // pdf-a as played: what a replacement runs
	vols  map[string]string           // the YAML's volume name -> the pod's
	env   map[string]string           // takeover.yaml's
	infra string                      // the pid of the pod's infra container, in its network namespace
	names map[string]string           // "pdf-a" -> the container's podman name
	image func(version string) string // the image of a version
}

// playPair plays kubernetes/pod.yaml with the tests' images, its pod and
// volumes renamed (podman shares an emptyDir by name, NOTES-facts.md),
// after edit; it is removed when the test ends.
func playPair(t *testing.T, edit func(*corev1.PodSpec)) *pair {
	t.Helper()
	return playPairEnv(t, nil, edit)
}

// playPairEnv is playPair with takeover.yaml's settings changed as env
// says, in the ConfigMap the pod is played with and in the environment of
// every container run in it later.
func playPairEnv(t *testing.T, env map[string]string, edit func(*corev1.PodSpec)) *pair {
	t.Helper()
	objs := loadAll(t)
	pod := objs.pods[0].DeepCopy()
	cm := objs.configMaps[0].DeepCopy()
	for k, v := range env {
		if _, ok := cm.Data[k]; !ok {
			t.Fatalf("takeover.yaml has no %s to change", k)
		}
		cm.Data[k] = v
	}
	p := &pair{pod: unique("hf-pair"), vols: map[string]string{}, env: cm.Data,
		names: map[string]string{}, image: func(v string) string { return serverImage + ":" + v }}
	pod.Name = p.pod
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		p.vols[v.Name] = unique("hf-" + v.Name)
		v.Name = p.vols[v.Name]
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		c.Image = strings.Replace(c.Image, "localhost/handoff-pdf", serverImage, 1)
		for j := range c.VolumeMounts {
			c.VolumeMounts[j].Name = p.vols[c.VolumeMounts[j].Name]
		}
		p.names[c.Name] = p.pod + "-" + c.Name
	}
	if edit != nil {
		edit(&pod.Spec)
	}
	p.spec = pod.Spec.Containers[0]
	b, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file, cmFile := filepath.Join(dir, "pod.yaml"), filepath.Join(dir, "takeover.yaml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err = yaml.Marshal(cm); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cmFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.remove(t) })
	kubePlay(t, "--configmap", cmFile, file)
	infra, err := podman("inspect", infraOf(t, p.pod), "--format", "{{.State.Pid}}")
	if err != nil {
		t.Fatal(err)
	}
	p.infra = infra
	return p
}

func (p *pair) remove(t *testing.T) {
	removePod(t, p.pod)
	for _, v := range p.vols {
		podman("volume", "rm", "-f", v)
	}
}

// logs is everything ctr wrote, stdout and stderr (the servers log to
// stderr), without podman's own complaint about syslog.
func logs(t *testing.T, ctr string) string {
	t.Helper()
	out, err := exec.Command("podman", "logs", ctr).CombinedOutput()
	if err != nil {
		t.Fatalf("podman logs %s: %v\n%s", ctr, err, out)
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.Contains(l, "failed to connect to syslog") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// waitFor polls cond until it holds, failing the test with what it says
// last after within: a state is waited for, never a time slept.
func waitFor(t *testing.T, what string, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
	}
	t.Fatalf("no %s within %v; last seen:\n%s", what, within, last)
}

// waitLines waits until ctr's log holds each line at least n times.
func waitLines(t *testing.T, ctr string, n int, lines ...string) string {
	t.Helper()
	var log string
	waitFor(t, fmt.Sprintf("%d× %q in %s", n, lines, ctr), 90*time.Second, func() (bool, string) {
		log = logs(t, ctr)
		for _, l := range lines {
			if strings.Count(log, l) < n {
				return false, log
			}
		}
		return true, log
	})
	return log
}

// The log lines the scenarios wait for and count.
const (
	lineServing   = `msg=serving `
	lineUpgraded  = `upgraded=true`
	lineIdle      = `msg="handed over; idle until stopped"`
	linePeer      = `msg="handoff: taking over from a peer"`
	lineFirst     = `upgraded=false`
	lineStaleMark = `did not stop cleanly`
)

// roles waits for the pod's start to settle: one container started first
// and idles, the other took over from it and serves.
func (p *pair) roles(t *testing.T) (serving, idle string) {
	t.Helper()
	a, b := p.names["pdf-a"], p.names["pdf-b"]
	waitFor(t, "one container serving and the other idle", 90*time.Second, func() (bool, string) {
		la, lb := logs(t, a), logs(t, b)
		switch {
		case strings.Contains(la, lineIdle) && strings.Contains(lb, linePeer):
			serving, idle = b, a
		case strings.Contains(lb, lineIdle) && strings.Contains(la, linePeer):
			serving, idle = a, b
		default:
			return false, a + ":\n" + la + "\n" + b + ":\n" + lb
		}
		return true, ""
	})
	if got := status(t, serving)["phase"]; got != "serving" {
		t.Fatalf("%s serves but its control socket says phase %q", serving, got)
	}
	return serving, idle
}

// status is ctr's handoffctl status, field by field (the first line of
// each), through the control socket in the container's own /tmp, as the
// manifests' probes ask it.
func status(t *testing.T, ctr string) map[string]string {
	t.Helper()
	out, err := podman("exec", ctr, "/bin/handoffctl", "status", "-socket", "/tmp/handoff.ctl")
	if err != nil {
		t.Fatalf("status of %s: %v; its log:\n%s", ctr, err, logs(t, ctr))
	}
	st := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if _, seen := st[k]; ok && !seen {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st
}

// stop stops ctr as the kubelet does before it changes the image (SIGTERM,
// SIGKILL after grace) and returns its exit code.
func stop(t *testing.T, ctr string) string {
	t.Helper()
	if _, err := podman("stop", "-t", "30", ctr); err != nil {
		t.Fatal(err)
	}
	code, err := podman("inspect", ctr, "--format", "{{.State.ExitCode}}")
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// run starts ctr anew in the pod, as pdf-a of pod.yaml is but for the
// image, the entry point and the arguments (nil: the manifest's), with
// takeover.yaml's environment, and without restarts, so that its exit
// stays visible.
func (p *pair) run(t *testing.T, ctr, image, entrypoint string, args []string) {
	t.Helper()
	c := p.spec
	cmd := []string{"run", "-d", "--pod", p.pod, "--name", ctr, "--restart", "no",
		"--user", fmt.Sprintf("%d:%d", 65532, 65532), "--cap-drop", "all", "--security-opt", "no-new-privileges"}
	for _, m := range c.VolumeMounts {
		ro := ""
		if m.ReadOnly {
			ro = ":ro"
		}
		cmd = append(cmd, "-v", m.Name+":"+m.MountPath+ro)
	}
	for k, v := range p.env {
		cmd = append(cmd, "-e", k+"="+v)
	}
	if entrypoint != "" {
		cmd = append(cmd, "--entrypoint", entrypoint)
	}
	if args == nil {
		args = c.Args
	}
	if _, err := podman(append(append(cmd, image), args...)...); err != nil {
		t.Fatal(err)
	}
}

// replace stops ctr (it must exit 0), removes it and runs image in its
// place, as the kubelet does when the container's image is changed.
func (p *pair) replace(t *testing.T, ctr, image, entrypoint string, args []string) {
	t.Helper()
	if code := stop(t, ctr); code != "0" {
		t.Fatalf("%s exited %s on SIGTERM: want 0\n%s", ctr, code, logs(t, ctr))
	}
	if _, err := podman("rm", ctr); err != nil {
		t.Fatal(err)
	}
	p.run(t, ctr, image, entrypoint, args)
}

// exited waits until ctr has exited and returns its exit code.
func exited(t *testing.T, ctr string) string {
	t.Helper()
	var code string
	waitFor(t, ctr+" exited", 90*time.Second, func() (bool, string) {
		out, err := podman("inspect", ctr, "--format", "{{.State.Status}} {{.State.ExitCode}}")
		if err != nil {
			t.Fatal(err)
		}
		st, c, _ := strings.Cut(out, " ")
		code = c
		return st == "exited", out
	})
	return code
}

// dial connects to addr from the pod's network namespace: the servers
// listen there, as a Service would reach them.
func (p *pair) dial(t *testing.T, addr string) *net.TCPConn { return p.dialBuf(t, addr, 0) }

// dialBuf is dial with a receive buffer of rcvbuf bytes (0: the kernel's),
// set before the connection is made: shrunk afterwards, the window the
// client advertised shrinks, and Linux then resumes sending only at its
// zero-window probes, seconds apart (seen: a reader stalled for 20 s).
func (p *pair) dialBuf(t *testing.T, addr string, rcvbuf int) *net.TCPConn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result)
	go func() {
		// Never unlocked: the thread leaves the host's namespace, so it
		// ends with this goroutine instead of serving others.
		runtime.LockOSThread()
		ns, err := os.Open("/proc/" + p.infra + "/ns/net")
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{nil, os.NewSyscallError("setns", err)}
			return
		}
		d := net.Dialer{}
		if rcvbuf > 0 {
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf) })
				return errors.Join(err, serr)
			}
		}
		c, err := d.Dial("tcp", addr)
		done <- result{c, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("dial %s in pod %s: %v", addr, p.pod, r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c.(*net.TCPConn)
}

// inPod is a command run in the pod's network namespace.
func (p *pair) inPod(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", p.infra, "-n", name}, args...)...)
}
