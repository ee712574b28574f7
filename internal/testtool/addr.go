package testtool

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// FreeAddr finds a loopback TCP address to listen on, for a server that
// listens on it again (a restart) and so needs it fixed. A port the kernel
// picks (":0") will not do: it comes from the ephemeral range, from which
// every client socket of the tests running alongside takes its own, and
// one may take it between this check and the server's bind. Ports below
// that range are only ever bound on purpose.
func FreeAddr(t testing.TB) string {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &low)
	}
	for range 100 {
		if low <= 1024 {
			break
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 1024+rand.IntN(low-1024)))
		if err == nil {
			defer ln.Close()
			return ln.Addr().String()
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
