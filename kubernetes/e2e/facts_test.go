//go:build e2epod

package e2e

// The facts of NOTES-facts.md that a takeover between containers rests on,
// pinned with real podman pods: podprobe in two containers of one pod
// made from Kubernetes YAML by podman kube play. Each test fails, never
// skips, when podman cannot run a pod: a fact not measured must not look
// like a fact that holds.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// probeImage is podprobe alone in a scratch image, built by TestMain.
const probeImage = "localhost/handoff-podprobe:e2e"

func TestMain(m *testing.M) {
	for _, build := range []func() error{buildProbeImage, buildServers} {
		if err := build(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func buildProbeImage() error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root: the pods are root's (kubernetes/e2e/setup prepares podman)")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		return fmt.Errorf("podman not found: run kubernetes/e2e/setup (make e2e-pod does): %w", err)
	}
	ctx, err := os.MkdirTemp("", "podprobe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ctx)
	build := exec.Command("go", "build", "-o", filepath.Join(ctx, "podprobe"), "./podprobe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./podprobe: %w\n%s", err, out)
	}
	cf := "FROM scratch\nCOPY podprobe /bin/podprobe\nENTRYPOINT [\"/bin/podprobe\"]\n"
	if err := os.WriteFile(filepath.Join(ctx, "Containerfile"), []byte(cf), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("podman", "build", "-q", "-t", probeImage, ctx).CombinedOutput(); err != nil {
		return fmt.Errorf("podman build: %w\n%s", err, out)
	}
	return nil
}

// podman runs podman and returns its standard output, trimmed.
func podman(args ...string) (string, error) {
	cmd := exec.Command("podman", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// unique is a name no other pod or volume on the machine has: podman 4.3
// makes an emptyDir a volume named as in the YAML and shared by every pod
// that names it so (NOTES-facts.md).
func unique(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// container is one container of a test pod.
type container struct {
	name, args, extra string // args: a YAML flow list; extra: more YAML lines of the container
}

// play makes a pod of the containers with podman kube play, all mounting
// one emptyDir at /run/handoff, and removes it when the test ends. It
// returns the pod's name, the volume's and the YAML file's; container C is
// POD-C.
func play(t *testing.T, podExtra string, cs ...container) (pod, vol, file string) {
	t.Helper()
	pod, vol = unique("hf-facts"), unique("hf-vol")
	var y strings.Builder
	fmt.Fprintf(&y, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\nspec:\n%s  volumes:\n  - name: %s\n    emptyDir: {}\n  containers:\n",
		pod, podExtra, vol)
	for _, c := range cs {
		fmt.Fprintf(&y, "  - name: %s\n    image: %s\n    args: %s\n    volumeMounts:\n    - {name: %s, mountPath: /run/handoff}\n%s",
			c.name, probeImage, c.args, vol, c.extra)
	}
	dir := t.TempDir()
	file = filepath.Join(dir, "pod.yaml")
	if err := os.WriteFile(file, []byte(y.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	kubePlay(t, file)
	t.Cleanup(func() {
		removePod(t, pod)
		podman("volume", "rm", "-f", vol)
	})
	return pod, vol, file
}

// removePod removes pod and its containers.
func removePod(t *testing.T, pod string) {
	t.Helper()
	if err := removeSettled("pod", "rm", "-f", "-t", "0", pod); err != nil {
		t.Errorf("removing the pod: %v", err)
	}
}

// removeSettled runs a podman rm, again when it fails: podman 4.3 fails to
// remove a container it is restarting (restartPolicy Always, a container
// that exits: "container state improper: stopped"); a next try finds it
// settled. CI met it with one container's rm as well as with a pod's.
func removeSettled(args ...string) error {
	var err error
	for try := 0; try < 5; try++ {
		if _, err = podman(args...); err == nil {
			return nil
		}
	}
	return err
}

// kubePlay runs podman kube play with its arguments, from the directory of
// the file (the last one): kube play builds an image from a directory named
// like an image in the current one, and there is none there.
func kubePlay(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("podman", append([]string{"kube", "play"}, args...)...)
	cmd.Dir = filepath.Dir(args[len(args)-1])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("podman kube play %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// waitLog waits until container's log has a line containing want, or one
// saying error=, and returns the whole log.
func waitLog(t *testing.T, ctr, want string, within time.Duration) string {
	t.Helper()
	var log string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, err := exec.Command("podman", "logs", ctr).Output() // stdout only: podman's own noise is on stderr
		if err != nil {
			t.Fatalf("podman logs %s: %v", ctr, err)
		}
		log = string(out)
		if strings.Contains(log, want) || strings.Contains(log, "error=") {
			return log
		}
	}
	t.Fatalf("%s: no %q within %v; log:\n%s", ctr, want, within, log)
	return ""
}

// mustHave fails unless every line is in the log.
func mustHave(t *testing.T, who, log string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(log, l) {
			t.Errorf("%s: no %q in its log:\n%s", who, l, log)
		}
	}
}

// TestHandoverBetweenContainers: (a), (b), (c) with podman's defaults:
// root in both, separate PID namespaces.
func TestHandoverBetweenContainers(t *testing.T) {
	pod, _, _ := play(t, "  restartPolicy: Never\n",
		container{name: "a", args: `["serve", "/run/handoff"]`},
		container{name: "b", args: `["take", "/run/handoff"]`})
	b := waitLog(t, pod+"-b", "done=1", 60*time.Second)
	a := waitLog(t, pod+"-a", "done=1", 30*time.Second)
	mustHave(t, "B", b,
		"role=take uid=0 gid=0",
		"path_connected=1 peer_uid=0 peer_gid=0 peer_pid=0", // (a): the peer's pid is 0 from another PID namespace
		"abstract_connected=1",                              // (b)
		`received="fds" fds=2`,                              // (c)
		`conn_read="unread-by-A"`,
		`new_conn_read="after-takeover"`)
	mustHave(t, "A", a,
		"role=serve uid=0 gid=0",
		"path_accepted=1 peer_uid=0 peer_gid=0 peer_pid=0",
		"abstract_accepted=1",
		`old_conn_reply="B:unread-by-A"`,
		`new_conn_reply="B:after-takeover"`)
}

// TestPeerPidInSharedPIDNamespace: with shareProcessNamespace SO_PEERCRED
// names the peer's real pid, and it is the one the peer sees as its own.
func TestPeerPidInSharedPIDNamespace(t *testing.T) {
	pod, _, _ := play(t, "  restartPolicy: Never\n  shareProcessNamespace: true\n",
		container{name: "a", args: `["serve", "/run/handoff"]`},
		container{name: "b", args: `["take", "/run/handoff"]`})
	b := waitLog(t, pod+"-b", "done=1", 60*time.Second)
	a := waitLog(t, pod+"-a", "done=1", 30*time.Second)
	aPid, bPid := field(t, a, "role=serve", "pid"), field(t, b, "role=take", "pid")
	if aPid == "0" || aPid == bPid {
		t.Fatalf("pids %s and %s: want two distinct real pids", aPid, bPid)
	}
	mustHave(t, "A", a, "path_accepted=1 peer_uid=0 peer_gid=0 peer_pid="+bPid)
	mustHave(t, "B", b, "path_connected=1 peer_uid=0 peer_gid=0 peer_pid="+aPid)
}

// field is KEY's value on the log line that contains marker.
func field(t *testing.T, log, marker, key string) string {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, marker) {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, key+"="); ok {
				return v
			}
		}
	}
	t.Fatalf("no %s= on a line with %q:\n%s", key, marker, log)
	return ""
}

// TestOtherUIDCannotConnect: a socket made with the default umask (0755)
// by root cannot be connected to by a container running as another uid.
func TestOtherUIDCannotConnect(t *testing.T) {
	pod, _, _ := play(t, "  restartPolicy: Never\n",
		container{name: "a", args: `["serve", "/run/handoff"]`},
		container{name: "b", args: `["take", "/run/handoff", "5s"]`,
			extra: "    securityContext:\n      runAsUser: 1000\n      runAsGroup: 1000\n"})
	b := waitLog(t, pod+"-b", "done=1", 60*time.Second)
	mustHave(t, "B", b, "role=take uid=1000 gid=1000", "connect: permission denied")
	mustHave(t, "A", waitLog(t, pod+"-a", "ready=1", 10*time.Second), "socket=/run/handoff/probe.sock mode=Srwxr-xr-x owner=0:0")
}

// state is a container's state as podman inspect tells it.
type state struct{ status, pid, started, restarts, infra string }

func inspect(t *testing.T, ctr string) state {
	t.Helper()
	out, err := podman("inspect", ctr, "--format",
		"{{.State.Status}} {{.State.Pid}} {{.State.StartedAt.UnixNano}} {{.RestartCount}}")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	if len(f) != 4 {
		t.Fatalf("podman inspect %s: %q", ctr, out)
	}
	return state{status: f[0], pid: f[1], started: f[2], restarts: f[3]}
}

func infraOf(t *testing.T, pod string) string {
	t.Helper()
	id, err := podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestReplaceOneContainer: (d) podman rm of one container and podman run
// --pod of another image into the pod leave the other container's process
// and the pod's network namespace (its infra container) as they were, and
// the new container mounts the pod's emptyDir by the volume's name.
func TestReplaceOneContainer(t *testing.T) {
	pod, vol, _ := play(t, "  restartPolicy: Always\n",
		container{name: "a", args: `["serve", "/run/handoff"]`},
		container{name: "b", args: `["id", "/run/handoff"]`})
	waitLog(t, pod+"-a", "ready=1", 30*time.Second)
	before, infra := inspect(t, pod+"-a"), infraOf(t, pod)
	if err := removeSettled("rm", "-f", "-t", "0", pod+"-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := podman("run", "-d", "--pod", pod, "--name", pod+"-b", "-v", vol+":/run/handoff",
		probeImage, "take", "/run/handoff"); err != nil {
		t.Fatal(err)
	}
	b := waitLog(t, pod+"-b", "done=1", 60*time.Second)
	mustHave(t, "the new B", b, `conn_read="unread-by-A"`, `new_conn_read="after-takeover"`)
	after := inspect(t, pod+"-a")
	if after.pid != before.pid || after.started != before.started || after.status != "running" {
		t.Errorf("A was %+v before the new B and is %+v after: want the same process", before, after)
	}
	if got := infraOf(t, pod); got != infra {
		t.Errorf("the pod's infra container changed from %s to %s", infra, got)
	}
}

// TestKubePlayReplaceRecreatesThePod: (d) podman kube play --replace makes
// a new pod: a new infra container (network namespace) and new processes,
// so it cannot stand in for the kubelet's change of one container's image.
func TestKubePlayReplaceRecreatesThePod(t *testing.T) {
	pod, _, file := play(t, "  restartPolicy: Always\n",
		container{name: "a", args: `["serve", "/run/handoff"]`})
	waitLog(t, pod+"-a", "ready=1", 30*time.Second)
	before, infra := inspect(t, pod+"-a"), infraOf(t, pod)
	kubePlay(t, "--replace", file)
	waitLog(t, pod+"-a", "ready=1", 30*time.Second)
	after := inspect(t, pod+"-a")
	if after.started == before.started {
		t.Errorf("A started at %s before and after --replace: want a new process", after.started)
	}
	if got := infraOf(t, pod); got == infra {
		t.Errorf("the infra container is still %s after --replace: want a new pod", got)
	}
}

// TestContainerExitsZero: (e) a container that exits 0 leaves the other
// running; under Always podman restarts it, with no back-off; under Never
// it stays exited.
func TestContainerExitsZero(t *testing.T) {
	for _, tc := range []struct {
		policy      string
		wantRestart bool
	}{{"Always", true}, {"Never", false}} {
		t.Run(tc.policy, func(t *testing.T) {
			pod, _, _ := play(t, "  restartPolicy: "+tc.policy+"\n",
				container{name: "a", args: `["serve", "/run/handoff"]`},
				container{name: "b", args: `["exit", "0"]`})
			waitLog(t, pod+"-a", "ready=1", 30*time.Second)
			time.Sleep(5 * time.Second)
			a, b := inspect(t, pod+"-a"), inspect(t, pod+"-b")
			if a.status != "running" || a.restarts != "0" {
				t.Errorf("A: %+v, want running, never restarted", a)
			}
			n, _ := strconv.Atoi(b.restarts)
			// Within 5 s: the kubelet's back-off would allow at most 1 (10 s).
			if tc.wantRestart && n < 3 {
				t.Errorf("B restarted %d times in 5 s under Always: want several (no back-off)", n)
			}
			if !tc.wantRestart && (n != 0 || b.status != "exited") {
				t.Errorf("B: %+v under Never, want exited and never restarted", b)
			}
		})
	}
}

// TestUsers: (f) root by default; runAsUser and runAsGroup honoured at pod
// and container level; fsGroup not applied; the emptyDir owned by one
// container's uid:gid, mode 0755.
func TestUsers(t *testing.T) {
	pod, _, _ := play(t, "  restartPolicy: Never\n  securityContext:\n    runAsUser: 2000\n    runAsGroup: 2000\n    fsGroup: 3000\n",
		container{name: "podlevel", args: `["id", "/run/handoff"]`},
		container{name: "useronly", args: `["id", "/run/handoff"]`, extra: "    securityContext:\n      runAsUser: 1000\n"})
	pl := waitLog(t, pod+"-podlevel", "dir=", 30*time.Second)
	uo := waitLog(t, pod+"-useronly", "dir=", 30*time.Second)
	mustHave(t, "podlevel", pl, "uid=2000 gid=2000 groups=[2000]", "dir=/run/handoff mode=drwxr-xr-x")
	mustHave(t, "useronly", uo, "uid=1000 gid=2000 groups=[2000]", "dir=/run/handoff mode=drwxr-xr-x")
	// The emptyDir is one container's: whichever podman mounted first (both
	// orders were seen), never root's and never fsGroup's.
	owner := field(t, pl, "dir=", "owner")
	if owner != "2000:2000" && owner != "1000:2000" {
		t.Errorf("the emptyDir is owned by %s: want one container's uid:gid, 2000:2000 or 1000:2000", owner)
	}
	if o := field(t, uo, "dir=", "owner"); o != owner {
		t.Errorf("the containers see the emptyDir owned by %s and %s", owner, o)
	}

	root, _, _ := play(t, "  restartPolicy: Never\n", container{name: "a", args: `["id", "/run/handoff"]`})
	mustHave(t, "default", waitLog(t, root+"-a", "dir=", 30*time.Second), "uid=0 gid=0 groups=[]", "owner=0:0")
}

// TestEmptyDirIsSharedByName: two pods whose emptyDir has the same name
// mount the same directory under podman 4.3 (in Kubernetes, never).
func TestEmptyDirIsSharedByName(t *testing.T) {
	p1, vol, _ := play(t, "  restartPolicy: Never\n", container{name: "a", args: `["serve", "/run/handoff"]`})
	waitLog(t, p1+"-a", "ready=1", 30*time.Second)
	// A second pod naming the same volume: written by hand, not by play,
	// which makes a name of its own.
	p2 := unique("hf-facts")
	y := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\nspec:\n  restartPolicy: Never\n  volumes:\n  - name: %s\n    emptyDir: {}\n  containers:\n  - name: b\n    image: %s\n    args: [\"take\", \"/run/handoff\"]\n    volumeMounts:\n    - {name: %s, mountPath: /run/handoff}\n",
		p2, vol, probeImage, vol)
	file := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(file, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	kubePlay(t, file)
	t.Cleanup(func() { podman("pod", "rm", "-f", "-t", "0", p2) })
	// B of the other pod reaches A's socket through the "emptyDir": same
	// directory; A's abstract socket it cannot: that one is in A's network
	// namespace, and so (b) holds because the containers share it.
	b := waitLog(t, p2+"-b", "abstract_connected=", 60*time.Second)
	mustHave(t, "B in another pod", b, "path_connected=1", "abstract_connected=0")
	src := func(ctr string) string {
		s, err := podman("inspect", ctr, "--format", "{{range .Mounts}}{{.Source}}{{end}}")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s1, s2 := src(p1+"-a"), src(p2+"-b"); s1 != s2 {
		t.Errorf("the two pods' emptyDirs are %s and %s: podman no longer shares them by name", s1, s2)
	}
}
