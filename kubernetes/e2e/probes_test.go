//go:build e2epod

package e2e

// The probes of kubernetes/pod.yaml asked at every step of a takeover in
// the turn-taking pair. podman 4.3 ignores readinessProbe (and acts on no
// failed healthcheck: NOTES-facts.md), so the test runs each container's
// probe commands itself, as the kubelet would, with podman exec.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// probeCommand is the manifest's probe command of one kind (ready, live).
func (p *pair) probeCommand(kind string) []string {
	probe := map[string]*corev1.Probe{"ready": p.spec.ReadinessProbe, "live": p.spec.LivenessProbe}[kind]
	return probe.Exec.Command
}

// probes runs the manifest's readiness and liveness probes in ctr and
// fails unless both pass, each saying that pid 1 (every process is pid 1
// in its container) is in phase.
func (p *pair) probes(t *testing.T, step, ctr, phase string) {
	t.Helper()
	for _, kind := range []string{"ready", "live"} {
		out, err := podman(append([]string{"exec", ctr}, p.probeCommand(kind)...)...)
		if want := kind + ": pid 1 is " + phase; err != nil || out != want {
			t.Fatalf("%s: %s's %s probe: %q (%v), want it to pass saying %q; its log:\n%s",
				step, ctr, kind, out, err, want, logs(t, ctr))
		}
		t.Logf("%s: %s: probe %s: exit 0, %q", step, ctr, kind, out)
	}
}

// phaseOf is ctr's phase, or why its control socket did not answer.
func phaseOf(ctr string) (string, error) {
	out, err := podman("exec", ctr, "/bin/handoffctl", "status", "-socket", "/tmp/handoff.ctl")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "phase:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no phase in %q", out)
}

// waitPhase waits until ctr's control socket answers phase.
func waitPhase(t *testing.T, ctr, phase string) {
	t.Helper()
	waitFor(t, ctr+" "+phase, 60*time.Second, func() (bool, string) {
		got, err := phaseOf(ctr)
		return got == phase, fmt.Sprintf("phase %q, %v", got, err)
	})
}

// TestProbesThroughTakeover: both containers' probes pass at every step of
// a takeover, so that the pod stays in its Service throughout: before it
// (the serving one serving, the idle one handed-over: at the pod's start
// it was the first started, and handed over to the other), while the new
// container takes over (the old one upgrading, the new one starting), after
// it (the new one serving, the old one handed-over), and after a broken
// image's rollback (the serving one serving). The takeover is held in the
// middle by a connection whose handler cannot park until the test reads
// its replies; the park timeout (20 s, under takeover.yaml's 30 s bound on
// a takeover) is only the bound of that hold, far above the few podman
// execs made inside it.
func TestProbesThroughTakeover(t *testing.T) {
	p := playPair(t, func(s *corev1.PodSpec) {
		for i := range s.Containers {
			s.Containers[i].Args = append(s.Containers[i].Args, "-park-timeout", "20s")
		}
	})
	serving, idle := p.roles(t)
	p.probes(t, "before", serving, "serving")
	p.probes(t, "before", idle, "handed-over")
	if st := status(t, idle); st["phase"] != "handed-over" {
		t.Fatalf("handoffctl status in the idle %s: phase %q, want handed-over", idle, st["phase"])
	}

	s := p.stuckConn(t)
	idles := strings.Count(logs(t, serving), lineIdle)
	p.replace(t, idle, p.image("v2"), "", nil)
	waitPhase(t, serving, "upgrading")
	waitPhase(t, idle, "starting")
	p.probes(t, "during", serving, "upgrading")
	p.probes(t, "during", idle, "starting")
	s.finish(t) // the handler parks once its replies are read: the takeover commits
	waitLines(t, idle, 1, linePeer, lineServing)
	waitLines(t, serving, idles+1, lineIdle)
	serving, idle = idle, serving
	if g := status(t, serving)["generation"]; g != "2" {
		t.Fatalf("%s after taking over: generation %q, want 2 (committed, not rolled back)", serving, g)
	}
	p.probes(t, "after", serving, "serving")
	p.probes(t, "after", idle, "handed-over")

	p.brokenTakeover(t, serving, idle)
	p.probes(t, "after the rollback", serving, "serving")
}

// brokenTakeover replaces the idle container with one whose binary is
// another application (httpd in pdf's place): it reaches the takeover, is
// refused and exits; the serving container rolls back.
func (p *pair) brokenTakeover(t *testing.T, serving, idle string) {
	t.Helper()
	p.replace(t, idle, p.image("v1"), "/bin/httpd", []string{"-listen", "0.0.0.0:7070", "-control", "/tmp/handoff.ctl"})
	if code := exited(t, idle); code == "0" {
		t.Fatalf("httpd in pdf's place exited 0: want a failure\n%s", logs(t, idle))
	}
	if st := status(t, serving); !strings.Contains(st["rolled back"], "other_app=1") {
		t.Fatalf("%s: rolled back %q, want other_app=1", serving, st["rolled back"])
	}
}

// postStart runs sidecarset.yaml's postStart hook in ctr, as the kubelet
// would, and returns what it printed; it must exit 0.
func postStart(t *testing.T, ctr string) string {
	t.Helper()
	hook := loadAll(t).sidecarSets[0].Spec.Containers[0].Lifecycle.PostStart.Exec.Command
	out, err := podman(append([]string{"exec", ctr}, hook...)...)
	if err != nil {
		t.Fatalf("%s: postStart %q: %v; its log:\n%s", ctr, hook, err, logs(t, ctr))
	}
	return out
}

// TestIdleImage: the SidecarSet's empty image (build-image's :idle) in the
// pair's idle slot, with the server's arguments, as Kruise gives it the
// same spec but the image: its probes pass (handed-over), sidecarset.yaml's
// postStart hook returns at once, and it exits 0 on SIGTERM. A new version
// in its place then takes over from the serving container, and the hook
// there returns once it serves: Kruise's hot upgrade, a step at a time.
func TestIdleImage(t *testing.T) {
	p := playPair(t, nil)
	serving, idle := p.roles(t)
	p.replace(t, idle, p.image("idle"), "", nil)
	waitLines(t, idle, 1, "answering status as handed-over")
	p.probes(t, "empty image", idle, "handed-over")
	if out := postStart(t, idle); out != "serving: pid 1 is handed-over" {
		t.Fatalf("postStart in the empty image: %q, want it to return at once, handed-over", out)
	}
	p.replace(t, idle, p.image("v2"), "", nil) // the empty image must exit 0 on SIGTERM
	if out := postStart(t, idle); out != "serving: pid 1 is serving" {
		t.Fatalf("postStart in the new version: %q, want it to return once it serves", out)
	}
	waitLines(t, serving, 1, lineIdle)
	p.probes(t, "after the hook", idle, "serving")
	p.probes(t, "after the hook", serving, "handed-over")
}
