//go:build linux

package systemd

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkKeepRelease measures what the fd store costs the server per
// connection, on its side: one Keep at accept and one Release at close
// (fstat, then one sendmsg each, the first carrying the fd). The receiver
// is a unixgram socket drained by a goroutine standing in for systemd;
// systemd's own cost per message, which grows with the store, is measured
// under a real systemd (bench/README.md).
func BenchmarkKeepRelease(b *testing.B) {
	path := b.TempDir() + "/notify"
	rx, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	go drain(rx)
	b.Setenv("NOTIFY_SOCKET", path)
	s := New(Options{KeepSockets: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	rc, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	kind := "tcp:127.0.0.1:7070"
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := s.Keep(rc, kind, false); err != nil {
			b.Fatal(err)
		}
		if err := s.Release(rc, kind, false); err != nil {
			b.Fatal(err)
		}
	}
}

// drain reads messages and closes the fds they carry, as systemd's store
// would when the socket is removed.
func drain(c *net.UnixConn) {
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4))
	for {
		_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			fds, _ := unix.ParseUnixRights(&m)
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
}
