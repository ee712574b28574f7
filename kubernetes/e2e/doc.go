// Package e2e holds the tests of kubernetes/: the manifests' checks, which
// need only Go (make check-manifests), and, under the build tag e2epod, the
// facts of kubernetes/NOTES-facts.md pinned with real podman pods made from
// Kubernetes YAML by podman kube play (make e2e-pod): a Unix socket in the
// shared emptyDir, SO_PEERCRED across PID namespaces, abstract sockets, a
// TCP listener and a connection with unread bytes passed from one container
// to the other, replacing one container of a running pod, a container that
// exits, the users containers run as, and podman's emptyDir.
//
// The e2epod tests need root and podman (kubernetes/e2e/setup installs it
// on Debian 12); they fail, never skip, when podman cannot run a pod. The
// program in their containers is ./podprobe, built static into a scratch
// image by TestMain.
//
//	make check-manifests
//	make e2e-pod                           # setup, then every test
//	make e2e-pod RUN=TestReplaceOneContainer
//
// This is the module of its own that k8s.io/api needs, so that neither the
// library nor the examples require it.
package e2e
