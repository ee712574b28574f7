//go:build e2epod

package e2e

// The takeover token: both containers mount a Kubernetes Secret, and
// takeover.yaml's HANDOFF_TAKEOVER_TOKEN_FILE names the file it holds.
// podman 4.3's kube play mounts a Secret volume from a podman secret
// whose content is the Secret's YAML, with three differences from the
// kubelet (measured; kubernetes/README.md): `data` values are written
// as they are, not base64-decoded (and `stringData` is ignored), a
// secret volume without `optional: false` crashes kube play (a nil
// dereference, podman issue 16636; `optional: true` mounts nothing), and
// the volume is a named volume, named as the secret, that outlives the
// pod.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// tokenDir is where the containers mount the token's Secret.
const tokenDir = "/etc/handoff-takeover"

// tokenSecret makes a podman secret named name holding a Kubernetes
// Secret whose key "token" is token, as kube play reads it (the value
// as is: podman 4.3 does not base64-decode `data`). It and the volume
// kube play makes of it are removed when the test ends, after the pod.
func tokenSecret(t *testing.T, name, token string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "secret.yaml")
	secret := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: " + name + "\ntype: Opaque\ndata:\n  token: " + token + "\n"
	if err := os.WriteFile(file, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := podman("secret", "create", name, file); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		podman("volume", "rm", "-f", name)
		podman("secret", "rm", name)
	})
}

// tokenVolume is a plain volume named name holding token in the file
// "token", as a Secret of another content would: the wrong token.
func tokenVolume(t *testing.T, name, token string) {
	t.Helper()
	if _, err := podman("volume", "create", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { podman("volume", "rm", "-f", name) })
	dir, err := podman("volume", "inspect", name, "--format", "{{.Mountpoint}}")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// withSecret mounts the Secret secret read-only at tokenDir in every
// container; the volume is named as the secret, as podman names it.
func withSecret(secret string) func(*corev1.PodSpec) {
	return func(s *corev1.PodSpec) {
		optional := false // podman 4.3 crashes without it
		s.Volumes = append(s.Volumes, corev1.Volume{Name: secret, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: secret, Optional: &optional}}})
		for i := range s.Containers {
			s.Containers[i].VolumeMounts = append(s.Containers[i].VolumeMounts,
				corev1.VolumeMount{Name: secret, MountPath: tokenDir, ReadOnly: true})
		}
	}
}

// withVolume is p with the volume named from mounted as to instead, for a
// container run in it: another container spec of the same pod.
func (p *pair) withVolume(from, to string) *pair {
	q := *p
	q.spec.VolumeMounts = append([]corev1.VolumeMount(nil), p.spec.VolumeMounts...)
	for i := range q.spec.VolumeMounts {
		if q.spec.VolumeMounts[i].Name == from {
			q.spec.VolumeMounts[i].Name = to
		}
	}
	return &q
}

// The refusal of a peer whose token is not the serving process's: the
// serving process's log line, and its reason, which the peer gets.
const (
	lineRefused  = `msg="handoff: takeover refused"`
	reasonToken  = "the peer's takeover token is not this process's"
	lineRefusing = `msg="refusing to start"`
)

// TestTakeoverToken: the pair with a takeover token from a Secret
// (HANDOFF_TAKEOVER_TOKEN_FILE). At the pod's start the second container
// takes over with it. A new container whose token is another (its volume
// holds a wrong one) is refused with the reason in its log and exits 1;
// the serving container serves on, under the pdf load, with its
// generation, commits and rollbacks as they were (the refusal comes before
// any upgrade starts) and every connection. A new container with the
// right token then takes over, and nothing was lost: every request
// answered once, the witness on its first connection.
func TestTakeoverToken(t *testing.T) {
	secret, wrong := unique("hf-token"), unique("hf-wrong-token")
	tokenSecret(t, secret, "right-token")
	tokenVolume(t, wrong, "wrong-token")
	p := playPairEnv(t, map[string]string{"HANDOFF_TAKEOVER_TOKEN_FILE": tokenDir + "/token"}, withSecret(secret))
	serving, idle := p.roles(t)
	w := p.witness(t)
	w.version(t, pdfVersion["v1"])
	l := p.startLoad(t, serving, loadConns, 20, 60*time.Second)
	before := status(t, serving)

	if code := stop(t, idle); code != "0" {
		t.Fatalf("%s exited %s on SIGTERM: want 0", idle, code)
	}
	if _, err := podman("rm", idle); err != nil {
		t.Fatal(err)
	}
	p.withVolume(secret, wrong).run(t, idle, p.image("v2"), "", nil)
	if code := exited(t, idle); code != "1" {
		t.Fatalf("the container with the wrong token exited %s, want 1\n%s", code, logs(t, idle))
	}
	refused := lastLine(t, logs(t, idle), lineRefusing)
	t.Logf("the container with the wrong token: %s", refused)
	if !strings.Contains(refused, reasonToken) {
		t.Errorf("%s: %s, want the reason %q", idle, refused, reasonToken)
	}
	if l := lastLine(t, logs(t, serving), lineRefused); !strings.Contains(l, reasonToken) {
		t.Errorf("%s: %s, want the reason %q", serving, l, reasonToken)
	}
	after := status(t, serving)
	t.Logf("the serving container after the refusal: %v", after)
	for _, k := range []string{"phase", "generation", "committed", "rolled back", "last upgrade"} {
		if after[k] != before[k] {
			t.Errorf("%s: %s %q before the refused peer, %q after: want it unchanged", serving, k, before[k], after[k])
		}
	}
	// A refusal at the door is no upgrade: nothing rolled back, nothing counted.
	if after["phase"] != "serving" || after["rolled back"] != "0" {
		t.Fatalf("%s after the refusal: phase %q, rolled back %q, want serving and none", serving, after["phase"], after["rolled back"])
	}
	if n := connsOf(t, serving); n < loadConns+1 {
		t.Fatalf("%s serves %d connections after the refusal, want at least %d", serving, n, loadConns+1)
	}
	w.version(t, pdfVersion["v1"])

	if _, err := podman("rm", idle); err != nil {
		t.Fatal(err)
	}
	idles := strings.Count(logs(t, serving), lineIdle)
	p.run(t, idle, p.image("v2"), "", nil)
	waitLines(t, idle, 1, linePeer, lineServing)
	waitLines(t, serving, idles+1, lineIdle)
	if st := status(t, idle); st["phase"] != "serving" || st["generation"] != "2" {
		t.Fatalf("%s with the right token: %v, want serving generation 2", idle, st)
	}
	w.version(t, pdfVersion["v2"])
	l.finish(t)
	noStaleState(t, serving, idle)
}
