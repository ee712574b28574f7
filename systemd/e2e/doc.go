// Package e2e holds the end-to-end test of the pdf example under a real
// systemd: systemd 252 booted in systemd-nspawn on a Debian 12 root, the
// units of systemd/ installed, and real clients on the host (the container
// shares its network) checking every reply while systemctl reloads,
// socket-activates and restarts the service.
//
// The tests carry the build tag e2esystemd, so go test ./... builds none
// of them. They need root, systemd-nspawn and a root made by
// systemd/e2e/setup:
//
//	make e2e-systemd                  # setup, then every scenario
//	make e2e-systemd RUN=TestReload   # one scenario
//
// See README.md for what each scenario proves.
package e2e
