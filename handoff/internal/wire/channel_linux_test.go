package wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns the two ends of a channel over a SOCK_SEQPACKET socketpair,
// as the old process makes it.
func pair(t *testing.T) (*Channel, *Channel) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	end := func(fd int) *Channel {
		f := os.NewFile(uintptr(fd), "channel")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		ch := NewChannel(c.(*net.UnixConn))
		t.Cleanup(func() { ch.Close() })
		return ch
	}
	return end(fds[0]), end(fds[1])
}

// TestChannelFrames: a frame longer than a packet arrives whole, fds
// arrive close-on-exec with their records, and a step that waits for one
// frame refuses another.
func TestChannelFrames(t *testing.T) {
	a, b := pair(t)
	big := State(bytes.Repeat([]byte("0123456789"), 20000)) // 200 kB: four packets
	pipe := make([]int, 2)
	if err := unix.Pipe2(pipe, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer CloseFds(pipe)
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
		_ = a.Send(big, nil)
		_ = a.Send(Conns{Seq: 0, Records: []Record{{ID: 1, Kind: "pipe"}}}, pipe[:1])
		_ = a.Send(Final{Conns: 1}, nil)
	}()
	var got State
	if err := b.Expect(&got); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("state of %d bytes: %d bytes, %v", len(big), len(got), err)
	}
	m, err := b.Recv()
	var c Conns
	if err != nil || m.Expect(&c) != nil || len(m.Fds) != 1 || len(c.Records) != 1 {
		t.Fatalf("CONNS: %+v %+v %v", m, c, err)
	}
	defer CloseFds(m.Fds)
	if flags, err := unix.FcntlInt(uintptr(m.Fds[0]), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("received fd's flags %#x, %v: not close-on-exec", flags, err)
	}
	if err := b.Expect(&Ready{}); err == nil || !strings.Contains(err.Error(), "expected READY, got FINAL") {
		t.Errorf("READY expected, FINAL came: %v", err)
	}
}

// TestChannelRefusals: the peer's ABORT is ErrRejected with its reason,
// fds where none may come are closed and refused, and the peer's close is
// io.EOF.
func TestChannelRefusals(t *testing.T) {
	a, b := pair(t)
	pipe, r := watchedPipe(t)
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
		_ = a.Send(Abort{Reason: strings.Repeat("x", MaxString+10)}, nil)
		_ = a.Send(Serving{}, pipe[1:])
		unix.Close(pipe[1])
		a.Close()
	}()
	if err := b.Expect(&Serving{}); !errors.Is(err, ErrRejected) || !strings.HasSuffix(err.Error(), ": "+strings.Repeat("x", MaxString)) {
		t.Errorf("ABORT: %.80v", err)
	}
	if err := b.Expect(&Serving{}); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "unexpected fds") {
		t.Errorf("SERVING with an fd: %v", err)
	}
	// The fd received with SERVING is closed: the pipe's last writer gone.
	requireClosed(t, r)
	if err := b.Expect(&Serving{}); !errors.Is(err, io.EOF) {
		t.Errorf("after the peer closed: %v", err)
	}
}

// TestPeerCred: a socketpair's peer is the process that made it.
func TestPeerCred(t *testing.T) {
	a, _ := pair(t)
	cred, err := PeerCred(a.Conn())
	if err != nil || int(cred.Pid) != os.Getpid() || int(cred.Uid) != os.Getuid() {
		t.Fatalf("peer credentials %+v, %v; want pid %d uid %d", cred, err, os.Getpid(), os.Getuid())
	}
}

// TestStateStream: the state stream arrives whole and checked, and a
// damaged one is refused at its STATE_END.
func TestStateStream(t *testing.T) {
	a, b := pair(t)
	want := bytes.Repeat([]byte("state "), 30000)
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
		w := NewStateWriter(a)
		_, _ = w.Write(want)
		_ = w.Close()
		_ = a.Send(State("more"), nil)
		_ = a.Send(StateEnd{Total: 5, CRC: 1}, nil)
	}()
	r := NewStateReader(b)
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, want) || r.Total() != uint64(len(want)) {
		t.Fatalf("state: %d bytes of %d, total %d, %v", len(got), len(want), r.Total(), err)
	}
	damaged := NewStateReader(b)
	if err := damaged.Drain(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged stream: %v", err)
	}
}

// TestChannelBadPackets: packets that do not make a frame are protocol
// errors, and fds that came with them are closed.
func TestChannelBadPackets(t *testing.T) {
	packet := func(typ Type, flags byte, payload string) []byte {
		b := make([]byte, headerLen, headerLen+len(payload))
		putHeader(b, header{typ: typ, flags: flags, size: uint32(len(payload))})
		return append(b, payload...)
	}
	for name, c := range map[string]struct {
		pkts [][]byte
		fdOn int // the packet that carries an fd, or -1
		want string
	}{
		"short":            {[][]byte{{1, 0, 0}}, -1, "shorter than a header"},
		"other type":       {[][]byte{packet(TypeState, flagMore, "ab"), packet(TypeHello, 0, "c")}, -1, "HELLO packet inside a STATE frame"},
		"fds continuing":   {[][]byte{packet(TypeConns, flagMore, "ab"), packet(TypeConns, 0, "c")}, 1, "fds on a continuation packet"},
		"length disagrees": {[][]byte{append(packet(TypeFinal, 0, "abcd"), 'x')}, 0, "says 4 payload bytes, carries 5"},
	} {
		t.Run(name, func(t *testing.T) {
			a, b := pair(t)
			pipe, r := watchedPipe(t)
			for i, p := range c.pkts {
				var oob []byte
				if i == c.fdOn {
					oob = unix.UnixRights(pipe[1])
				}
				if _, _, err := a.Conn().WriteMsgUnix(p, oob, nil); err != nil {
					t.Fatal(err)
				}
			}
			unix.Close(pipe[1])
			if _, err := b.Recv(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a protocol error saying %q", err, c.want)
			}
			// No copy of the pipe's write end is left here.
			requireClosed(t, r)
		})
	}
}

// watchedPipe returns a pipe's two fds and its read end as a file whose
// reads see EOF once every copy of the write end is closed.
func watchedPipe(t *testing.T) ([]int, *os.File) {
	t.Helper()
	pipe := make([]int, 2)
	if err := unix.Pipe2(pipe, unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	r := os.NewFile(uintptr(pipe[0]), "pipe")
	t.Cleanup(func() { r.Close() })
	return pipe, r
}

// requireClosed fails unless every copy of r's write end is closed. The
// deadline is a safety net against a copy left open, which would make the
// read wait forever.
func requireClosed(t *testing.T, r *os.File) {
	t.Helper()
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("pipe read %d, %v: a copy of its write end is still open here", n, err)
	}
}
