//go:build e2esystemd

package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkFDStore measures what keeping connections in systemd's fd store
// costs, under systemd 252: the pdf service, with -fdstore and without it
// (the same binary and unit otherwise), is sent n new connections one
// after another, each saying HELLO; then every one closes. Reported per
// connection: the wall time to open them all (each waits for its WELCOME,
// so a slow store shows as slower accepts), and the CPU time systemd (the
// container's PID 1) spent meanwhile, read from the host's /proc. Run it
// as bench/README.md says; it is not part of make e2e-systemd.
func BenchmarkFDStore(b *testing.B) {
	for _, n := range []int{250, 1000, 2000} {
		for _, store := range []bool{false, true} {
			b.Run(fmt.Sprintf("conns=%d/fdstore=%t", n, store), func(b *testing.B) {
				for b.Loop() {
					openClose(b, n, store)
				}
			})
		}
	}
}

// openClose runs one measurement in a container of its own.
func openClose(b *testing.B, n int, store bool) {
	c := boot(b)
	flags := "-listen 127.0.0.1:7070 -state /var/lib/pdf/state -control /run/pdf/control"
	if store {
		flags += " -snapshot 1s -fdstore -fdstore-max " + strconv.Itoa(n)
	}
	dropIn := fmt.Sprintf("[Service]\nExecStart=\nExecStart=/opt/pdf/current/pdf %s\nFileDescriptorStoreMax=%d\nLimitNOFILE=16384\n",
		flags, n+16)
	c.must("sh", "-c", "mkdir -p /etc/systemd/system/pdf.service.d && printf '%s' '"+dropIn+
		"' > /etc/systemd/system/pdf.service.d/bench.conf")
	c.must("systemctl", "daemon-reload")
	c.start()

	cpu0 := c.pid1CPU()
	begin := time.Now()
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dial(b, "bench-"+strconv.Itoa(i))
	}
	c.must("systemctl", "show", "-p", "MainPID", service) // systemd has read every notification
	open, openCPU := time.Since(begin), c.pid1CPU()-cpu0

	cpu0 = c.pid1CPU()
	for _, cl := range clients {
		cl.nc.Close()
	}
	time.Sleep(time.Second) // the server sees each close and releases it
	c.must("systemctl", "show", "-p", "MainPID", service)
	closeCPU := c.pid1CPU() - cpu0 - c.idleCPU(time.Second)

	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	b.ReportMetric(per(open), "open-µs/conn")
	b.ReportMetric(per(openCPU), "pid1-open-µs/conn")
	b.ReportMetric(per(max(closeCPU, 0)), "pid1-close-µs/conn")
	b.ReportMetric(0, "ns/op")
}

// pid1CPU is the CPU time the container's systemd has used, from the
// host's /proc (schedstat: nanoseconds, where stat counts 10 ms ticks).
func (c *container) pid1CPU() time.Duration {
	c.t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(c.pid1) + "/schedstat")
	if err != nil {
		c.t.Fatal(err)
	}
	ns, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64)
	if err != nil {
		c.t.Fatal(err)
	}
	return time.Duration(ns)
}

// idleCPU is what systemd uses doing nothing for d, to subtract.
func (c *container) idleCPU(d time.Duration) time.Duration {
	cpu0 := c.pid1CPU()
	time.Sleep(d)
	return c.pid1CPU() - cpu0
}
