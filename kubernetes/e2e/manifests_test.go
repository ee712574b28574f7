package e2e

// The manifests of kubernetes/ checked without a cluster. `kubectl apply
// --dry-run=client` cannot do it here: it asks an API server for discovery
// first, and `kubectl set image --local` drops unknown fields silently
// (NOTES-facts.md). So each document is decoded strictly into the real
// Kubernetes API types (k8s.io/api), where a misspelt or misplaced field is
// an error, and then held to what the takeover relies on.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// manifestsDir is kubernetes/, seen from kubernetes/e2e where go test runs.
const manifestsDir = ".."

// The takeover's settings and the names that tie the manifests together.
const (
	takeoverConfigMap = "handoff-takeover"
	socketVar         = "HANDOFF_TAKEOVER_SOCKET"
	uidVar            = "HANDOFF_TAKEOVER_UID"
	handoffVolume     = "handoff"
)

// images are the ones kubernetes/build-image makes, and the SidecarSet's
// idle image that the core change is to provide.
var images = map[string]bool{
	"localhost/handoff-pdf:v1":   true,
	"localhost/handoff-pdf:v2":   true,
	"localhost/handoff-pdf:idle": true,
}

// sidecarSet holds the fields of OpenKruise's apps.kruise.io/v1alpha1
// SidecarSet that sidecarset.yaml may use, with the same JSON names as
// kruise's apis/apps/v1alpha1/sidecarset_types.go (the module
// github.com/openkruise/kruise-api is not served by the Go module proxy
// reachable here, so it cannot be imported). Strict decoding into it
// rejects any other field, as Kruise's structural CRD schema would.
type sidecarSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		Selector       *metav1.LabelSelector `json:"selector,omitempty"`
		Namespace      string                `json:"namespace,omitempty"`
		Containers     []sidecarContainer    `json:"containers,omitempty"`
		InitContainers []sidecarContainer    `json:"initContainers,omitempty"`
		Volumes        []corev1.Volume       `json:"volumes,omitempty"`
		UpdateStrategy struct {
			Type           string                `json:"type,omitempty"`
			Paused         bool                  `json:"paused,omitempty"`
			Selector       *metav1.LabelSelector `json:"selector,omitempty"`
			Partition      *intOrString          `json:"partition,omitempty"`
			MaxUnavailable *intOrString          `json:"maxUnavailable,omitempty"`
		} `json:"updateStrategy,omitempty"`
		ImagePullSecrets     []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
		RevisionHistoryLimit *int32                        `json:"revisionHistoryLimit,omitempty"`
	} `json:"spec"`
}

type sidecarContainer struct {
	corev1.Container `json:",inline"`
	PodInjectPolicy  string `json:"podInjectPolicy,omitempty"` // BeforeAppContainer, AfterAppContainer
	UpgradeStrategy  struct {
		UpgradeType          string `json:"upgradeType,omitempty"` // ColdUpgrade, HotUpgrade
		HotUpgradeEmptyImage string `json:"hotUpgradeEmptyImage,omitempty"`
	} `json:"upgradeStrategy,omitempty"`
	ShareVolumePolicy *struct {
		Type string `json:"type,omitempty"`
	} `json:"shareVolumePolicy,omitempty"`
}

// intOrString accepts what Kubernetes' IntOrString does, 1 or "10%".
type intOrString struct{ raw []byte }

func (v *intOrString) UnmarshalJSON(b []byte) error {
	if _, err := strconv.Atoi(string(b)); err != nil && (len(b) < 2 || b[0] != '"') {
		return fmt.Errorf("want an integer or a string, got %s", b)
	}
	v.raw = append([]byte(nil), b...)
	return nil
}

// objects is every document of the manifests, decoded by kind.
type objects struct {
	configMaps  []*corev1.ConfigMap
	pods        []*corev1.Pod
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	sidecarSets []*sidecarSet
}

// decodeFile decodes every document of a manifest file into objs.
func decodeFile(path string, objs *objects) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return decode(filepath.Base(path), b, objs)
}

// decode decodes the documents of one YAML stream strictly: an unknown or
// duplicate field, a value of the wrong type, or an unknown kind fails.
func decode(name string, b []byte, objs *objects) error {
	docs := bytes.Split(b, []byte("\n---\n"))
	n := 0
	for i, doc := range docs {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return fmt.Errorf("%s, document %d: %w", name, i+1, err)
		}
		if meta.Kind == "" && len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue // a stream of comments only
		}
		var into any
		switch meta.APIVersion + " " + meta.Kind {
		case "v1 ConfigMap":
			o := new(corev1.ConfigMap)
			objs.configMaps, into = append(objs.configMaps, o), o
		case "v1 Pod":
			o := new(corev1.Pod)
			objs.pods, into = append(objs.pods, o), o
		case "apps/v1 Deployment":
			o := new(appsv1.Deployment)
			objs.deployments, into = append(objs.deployments, o), o
		case "v1 Service":
			o := new(corev1.Service)
			objs.services, into = append(objs.services, o), o
		case "apps.kruise.io/v1alpha1 SidecarSet":
			o := new(sidecarSet)
			objs.sidecarSets, into = append(objs.sidecarSets, o), o
		default:
			return fmt.Errorf("%s, document %d: unexpected apiVersion %q kind %q", name, i+1, meta.APIVersion, meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			return fmt.Errorf("%s, document %d (%s): %w", name, i+1, meta.Kind, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s: no document", name)
	}
	return nil
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}

// manifests are the files of kubernetes/ checked here: all of its YAML.
func manifests(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestsDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"deployment.yaml", "pod.yaml", "sidecarset.yaml", "takeover.yaml"}
	var got []string
	for _, f := range files {
		got = append(got, filepath.Base(f))
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("kubernetes/ holds %v, want %v: add a new manifest to this test", got, want)
	}
	return files
}

func loadAll(t *testing.T) *objects {
	t.Helper()
	objs := new(objects)
	for _, f := range manifests(t) {
		if err := decodeFile(f, objs); err != nil {
			t.Fatal(err)
		}
	}
	return objs
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := loadAll(t)
	if len(objs.configMaps) != 1 || len(objs.pods) != 1 || len(objs.deployments) != 2 ||
		len(objs.services) != 1 || len(objs.sidecarSets) != 1 {
		t.Fatalf("decoded %d ConfigMaps, %d Pods, %d Deployments, %d Services, %d SidecarSets; want 1, 1, 2, 1, 1",
			len(objs.configMaps), len(objs.pods), len(objs.deployments), len(objs.services), len(objs.sidecarSets))
	}
}

// TestManifestsCheckFails makes sure the decoding above can fail: each
// manifest with one field misspelt, or a value of the wrong type, is refused.
func TestManifestsCheckFails(t *testing.T) {
	for _, tc := range []struct{ file, from, to string }{
		{"pod.yaml", "envFrom:", "envFrm:"},
		{"pod.yaml", "runAsUser: 65532", "runAsUser: nobody"},
		{"deployment.yaml", "maxUnavailable: 0", "maxUnavailble: 0"},
		{"sidecarset.yaml", "hotUpgradeEmptyImage:", "hotUpgradeEmptyImg:"},
		{"sidecarset.yaml", "podInjectPolicy:", "podInjectionPolicy:"},
		{"sidecarset.yaml", "maxUnavailable: 1", "maxUnavailable: [1]"},
		{"takeover.yaml", "\ndata:", "\ndat:"},
	} {
		b, err := os.ReadFile(filepath.Join(manifestsDir, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(tc.from)) {
			t.Errorf("%s has no %q to break: update this test", tc.file, tc.from)
			continue
		}
		broken := bytes.Replace(b, []byte(tc.from), []byte(tc.to), 1)
		if err := decode(tc.file, broken, new(objects)); err == nil {
			t.Errorf("%s with %q for %q decoded without an error", tc.file, tc.to, tc.from)
		} else {
			t.Logf("%s with %q: %v", tc.file, tc.to, err)
		}
	}
}

// server is one container that runs a pdf server, with the pod spec it is in.
type server struct {
	where string
	c     corev1.Container
	pod   *corev1.PodSpec // nil for a SidecarSet's container: the pod is someone else's
	vols  []corev1.Volume
}

func servers(objs *objects) []server {
	var out []server
	add := func(where string, spec *corev1.PodSpec) {
		for _, c := range spec.Containers {
			if c.Command == nil { // the image's entry point: /bin/pdf
				out = append(out, server{where + "/" + c.Name, c, spec, spec.Volumes})
			}
		}
	}
	for _, p := range objs.pods {
		add("Pod "+p.Name, &p.Spec)
	}
	for _, d := range objs.deployments {
		add("Deployment "+d.Name, &d.Spec.Template.Spec)
	}
	for _, s := range objs.sidecarSets {
		for _, c := range s.Spec.Containers {
			out = append(out, server{"SidecarSet " + s.Name + "/" + c.Name, c.Container, nil, s.Spec.Volumes})
		}
	}
	return out
}

// TestTakeoverSettingsInOnePlace: the takeover's settings are the ConfigMap
// of takeover.yaml; every server takes it whole with envFrom,
// none sets a takeover variable of its own, and what the settings name
// (the socket's directory, the uid) is what each container has.
func TestTakeoverSettingsInOnePlace(t *testing.T) {
	objs := loadAll(t)
	cm := objs.configMaps[0]
	if cm.Name != takeoverConfigMap {
		t.Fatalf("the ConfigMap is %q, want %q", cm.Name, takeoverConfigMap)
	}
	socketDir := filepath.Dir(cm.Data[socketVar])
	uid, err := strconv.ParseInt(cm.Data[uidVar], 10, 64)
	if cm.Data[socketVar] == "" || err != nil {
		t.Fatalf("%s=%q %s=%q: want a socket path and a uid", socketVar, cm.Data[socketVar], uidVar, cm.Data[uidVar])
	}
	all := servers(objs)
	if len(all) != 5 { // the pair in the Pod, the pair in the Deployment, the SidecarSet's
		t.Fatalf("found %d server containers, want 5", len(all))
	}
	for _, s := range all {
		var from bool
		for _, e := range s.c.EnvFrom {
			from = from || (e.ConfigMapRef != nil && e.ConfigMapRef.Name == takeoverConfigMap)
		}
		if !from {
			t.Errorf("%s: no envFrom of ConfigMap %s", s.where, takeoverConfigMap)
		}
		for _, e := range s.c.Env {
			if strings.HasPrefix(e.Name, "HANDOFF_") {
				t.Errorf("%s: sets %s itself; it belongs in takeover.yaml", s.where, e.Name)
			}
		}
		if v := mountedVolume(s.c, s.vols, socketDir); v == nil || v.EmptyDir == nil || v.Name != handoffVolume {
			t.Errorf("%s: %s is not in the emptyDir %q, it is in %+v", s.where, socketDir, handoffVolume, v)
		}
		// The library refuses a directory others may write, as an
		// emptyDir's root is: it makes a subdirectory 0700 itself.
		if m := mountOf(s.c, socketDir); m != nil && filepath.Clean(m.MountPath) == socketDir {
			t.Errorf("%s: the takeover socket is at the root of the volume %s: want a subdirectory", s.where, m.MountPath)
		}
		if got := runAsUser(s); got == nil || *got != uid {
			t.Errorf("%s: runs as uid %v, want %s=%d", s.where, deref(got), uidVar, uid)
		}
		if !images[s.c.Image] {
			t.Errorf("%s: image %q is none that kubernetes/build-image makes", s.where, s.c.Image)
		}
	}
}

// mountOf is the mount of c under which path is (the deepest), or nil.
func mountOf(c corev1.Container, path string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, path)
		if err == nil && rel != ".." && !strings.HasPrefix(rel, "../") &&
			(best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	return best
}

func volumeByName(vols []corev1.Volume, name string) *corev1.Volume {
	for i := range vols {
		if vols[i].Name == name {
			return &vols[i]
		}
	}
	return nil
}

// mountedVolume is the volume c mounts where dir is, or nil.
func mountedVolume(c corev1.Container, vols []corev1.Volume, dir string) *corev1.Volume {
	m := mountOf(c, dir)
	if m == nil {
		return nil
	}
	return volumeByName(vols, m.Name)
}

func runAsUser(s server) *int64 {
	if s.c.SecurityContext != nil && s.c.SecurityContext.RunAsUser != nil {
		return s.c.SecurityContext.RunAsUser
	}
	if s.pod != nil && s.pod.SecurityContext != nil {
		return s.pod.SecurityContext.RunAsUser
	}
	return nil
}

func deref(p *int64) any {
	if p == nil {
		return "unset (the image's: root)"
	}
	return *p
}

// TestPairDiffersOnlyByName: the two containers of the turn-taking pair are
// the same but for their names (and the port's declaration, which is only
// informational), so that patching one's image is the whole upgrade; and the
// Deployment's pods are the Pod's.
func TestPairDiffersOnlyByName(t *testing.T) {
	objs := loadAll(t)
	pod := &objs.pods[0].Spec
	for _, spec := range []*corev1.PodSpec{pod, &objs.deployments[0].Spec.Template.Spec} {
		if len(spec.Containers) != 2 {
			t.Fatalf("%d containers, want the pair", len(spec.Containers))
		}
		a, b := spec.Containers[0], spec.Containers[1]
		a.Name, b.Name, a.Ports, b.Ports = "", "", nil, nil
		if !reflect.DeepEqual(a, b) {
			t.Errorf("the pair's containers differ beyond their names:\n%+v\n%+v", a, b)
		}
		if spec.RestartPolicy != corev1.RestartPolicyAlways {
			t.Errorf("restartPolicy %q, want Always", spec.RestartPolicy)
		}
	}
	if d := &objs.deployments[0].Spec.Template.Spec; !reflect.DeepEqual(pod, d) {
		t.Errorf("Deployment %s's pod template differs from Pod %s's spec", objs.deployments[0].Name, objs.pods[0].Name)
	}
}

// TestSidecarSetHotUpgrade: the SidecarSet's server is hot-upgraded, with an
// idle image of its own.
func TestSidecarSetHotUpgrade(t *testing.T) {
	objs := loadAll(t)
	s := objs.sidecarSets[0]
	if len(s.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(s.Spec.Containers))
	}
	c := s.Spec.Containers[0]
	if c.UpgradeStrategy.UpgradeType != "HotUpgrade" {
		t.Errorf("upgradeType %q, want HotUpgrade", c.UpgradeStrategy.UpgradeType)
	}
	if e := c.UpgradeStrategy.HotUpgradeEmptyImage; e == "" || e == c.Image {
		t.Errorf("hotUpgradeEmptyImage %q: want an idle image other than %q", e, c.Image)
	}
	if c.Lifecycle == nil || c.Lifecycle.PostStart == nil || c.Lifecycle.PostStart.Exec == nil {
		t.Errorf("no postStart exec hook: Kruise resets the old container once it returns, so it must wait for the commit")
	} else if cmd, want := c.Lifecycle.PostStart.Exec.Command, []string{"/bin/handoffctl", "wait", "serving", "-socket", argAfter(c.Args, "-control")}; len(cmd) < len(want) || !reflect.DeepEqual(cmd[:len(want)], want) {
		t.Errorf("postStart %q, want it to begin %q: wait for this container's own process to serve", cmd, want)
	}
	// The webhook injects into pods that match the selector: one must.
	sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	var matched int
	for _, d := range objs.deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			matched++
		}
	}
	if matched != 1 {
		t.Errorf("the SidecarSet's selector matches %d Deployments' pods, want 1", matched)
	}
}

// TestProbesAskTheirOwnProcess: every server's readiness and liveness
// probes are handoffctl probe ready and live on the control socket its
// own args name (a port would be answered by whichever process holds it),
// with a timeout above the kubelet's default 1 s, which a loaded node's
// exec probe can exceed.
func TestProbesAskTheirOwnProcess(t *testing.T) {
	for _, s := range servers(loadAll(t)) {
		control := argAfter(s.c.Args, "-control")
		for kind, p := range map[string]*corev1.Probe{"ready": s.c.ReadinessProbe, "live": s.c.LivenessProbe} {
			want := []string{"/bin/handoffctl", "probe", kind, "-socket", control}
			if p == nil || p.Exec == nil || !reflect.DeepEqual(p.Exec.Command, want) {
				t.Errorf("%s: %s probe %+v, want exec %q", s.where, kind, p, want)
				continue
			}
			if p.TimeoutSeconds < 2 {
				t.Errorf("%s: %s probe's timeoutSeconds %d, want more than the default 1", s.where, kind, p.TimeoutSeconds)
			}
		}
	}
}

// argAfter is the argument after flag in args, or "".
func argAfter(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}
