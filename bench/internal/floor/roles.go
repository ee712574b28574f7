package floor

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// batch is SCM_MAX_FD, the most fds one sendmsg carries; window is how
// many batches may be unacknowledged (unreceived fds count against the
// sender's limits).
const (
	batch  = 253
	window = 8
)

func count(args []string) (int, error) {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	n := fs.Int("n", 0, "connections")
	if err := fs.Parse(args); err != nil {
		return 0, err
	}
	if *n <= 0 {
		return 0, errors.New("floor: -n must be positive")
	}
	return *n, nil
}

// peer dials n connections to -addr, says ready, and holds them until
// its stdin closes.
func peer(args []string) error {
	fs := flag.NewFlagSet(RolePeer, flag.ContinueOnError)
	addr := fs.String("addr", "", "sender's address")
	n := fs.Int("n", 0, "connections")
	if err := fs.Parse(args); err != nil {
		return err
	}
	conns := make([]net.Conn, *n)
	for i := range conns {
		c, err := net.Dial("tcp", *addr)
		if err != nil {
			return fmt.Errorf("floor: peer: %w", err)
		}
		conns[i] = c
	}
	fmt.Println("ready")
	waitStdin()
	return nil
}

// sender accepts n connections from a peer, parks a reader in Read on
// each, then measures interrupting them and passing their fds to a
// receiver. It prints the Result as JSON.
func sender(args []string) error {
	n, err := count(args)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	conns, p, err := acceptFromPeer(self, n)
	if err != nil {
		return err
	}
	defer p.stop()
	ch, r, err := startReceiver(self, n)
	if err != nil {
		return err
	}
	defer r.stop()
	defer unix.Close(ch)

	var res Result
	res.Conns = n
	res.Interrupt = interrupt(conns)
	start := time.Now()
	if err := pass(ch, conns); err != nil {
		return err
	}
	res.Pass = time.Since(start)
	line, err := r.out.ReadString('\n')
	if err != nil {
		return fmt.Errorf("floor: receiver's report: %w", err)
	}
	if res.Convert, err = time.ParseDuration(line[:len(line)-1]); err != nil {
		return fmt.Errorf("floor: receiver's report %q: %w", line, err)
	}
	start = time.Now()
	if err := sendRecords(ch, n); err != nil {
		return err
	}
	res.Resume = time.Since(start)
	return json.NewEncoder(os.Stdout).Encode(res)
}

// recordsPerFrame fills a frame to about 64 KiB, as the library's PARKED
// frames are.
const recordsPerFrame = 64 << 10 / RecordBytes // 1024

// sendRecords sends n parked records, frame after frame, and waits for the
// receiver's word that every reader has resumed.
func sendRecords(ch, n int) error {
	frame := make([]byte, recordsPerFrame*RecordBytes)
	for sent := 0; sent < n; {
		k := min(recordsPerFrame, n-sent)
		for i := range k {
			binary.BigEndian.PutUint64(frame[i*RecordBytes:], uint64(sent+i))
		}
		if err := unix.Sendmsg(ch, frame[:k*RecordBytes], nil, nil, 0); err != nil {
			return os.NewSyscallError("sendmsg records", err)
		}
		sent += k
	}
	var b [1]byte
	if _, err := unix.Read(ch, b[:]); err != nil || b[0] != 'R' {
		return fmt.Errorf("floor: no word that the readers resumed (%q, %v)", b, err)
	}
	return nil
}

// reading is a connection with a goroutine blocked in Read on it.
type reading struct {
	c    *net.TCPConn
	done sync.WaitGroup
}

func acceptFromPeer(self string, n int) ([]*reading, *started, error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	accepted := make(chan []*reading, 1)
	go func() {
		var rs []*reading
		for len(rs) < n {
			c, err := ln.AcceptTCP()
			if err != nil {
				break
			}
			r := &reading{c: c}
			r.done.Add(1)
			go func() {
				defer r.done.Done()
				buf := make([]byte, 1024)
				c.Read(buf)
			}()
			rs = append(rs, r)
		}
		accepted <- rs
	}()
	p, err := start(exec.Command(self, RolePeer, "-addr", ln.Addr().String(), "-n", strconv.Itoa(n)))
	if err != nil {
		return nil, nil, err
	}
	rs := <-accepted
	// Let every reader reach its blocking Read, as a server's would be.
	time.Sleep(200 * time.Millisecond)
	return rs, p, nil
}

// interrupt sets a past read deadline on every connection and waits for
// every reader to return: what parking costs at the least.
func interrupt(rs []*reading) time.Duration {
	start := time.Now()
	for _, r := range rs {
		r.c.SetReadDeadline(start)
	}
	for _, r := range rs {
		r.done.Wait()
	}
	return time.Since(start)
}

func startReceiver(self string, n int) (int, *started, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, os.NewSyscallError("socketpair", err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "floor-channel")
	defer theirs.Close()
	cmd := exec.Command(self, RoleReceiver, "-n", strconv.Itoa(n))
	cmd.ExtraFiles = []*os.File{theirs} // fd 3 in the receiver
	r, err := start(cmd)
	if err != nil {
		unix.Close(fds[0])
		return -1, nil, err
	}
	return fds[0], r, nil
}

// pass sends every connection's fd, batch fds a message, keeping at most
// window messages unacknowledged, and returns once the receiver has
// acknowledged the last one.
func pass(ch int, rs []*reading) error {
	fds := make([]int, 0, batch)
	var sent, acked uint32
	for i := 0; i < len(rs); i += batch {
		fds = fds[:0]
		for _, r := range rs[i:min(i+batch, len(rs))] {
			fds = append(fds, rawFd(r.c))
		}
		for sent-acked >= window {
			if err := readAck(ch, &acked); err != nil {
				return err
			}
		}
		var seq [4]byte
		binary.BigEndian.PutUint32(seq[:], sent)
		if err := unix.Sendmsg(ch, seq[:], unix.UnixRights(fds...), nil, 0); err != nil {
			return os.NewSyscallError("sendmsg", err)
		}
		sent++
	}
	for acked < sent {
		if err := readAck(ch, &acked); err != nil {
			return err
		}
	}
	return nil
}

func readAck(ch int, acked *uint32) error {
	var b [4]byte
	n, err := unix.Read(ch, b[:])
	if err != nil || n != 4 || binary.BigEndian.Uint32(b[:]) != *acked {
		return fmt.Errorf("floor: bad acknowledgement %x (%d bytes, %v), want %d", b[:n], n, err, *acked)
	}
	*acked++
	return nil
}

func rawFd(c *net.TCPConn) int {
	raw, _ := c.SyscallConn()
	fd := -1
	raw.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// receiver takes n fds from fd 3, turns each into a net.Conn the way the
// handoff does (net.FileConn, then close the received fd), acknowledges
// each message, and reports the time spent converting.
func receiver(args []string) error {
	n, err := count(args)
	if err != nil {
		return err
	}
	const ch = 3
	unix.CloseOnExec(ch)
	if err := growFdTable(n); err != nil {
		return err
	}
	fmt.Println("ready")
	var conns []net.Conn
	var convert time.Duration
	buf, oob := make([]byte, 4), make([]byte, unix.CmsgSpace(batch*4))
	for len(conns) < n {
		fds, seq, err := recvFds(ch, buf, oob)
		if err != nil {
			return err
		}
		start := time.Now()
		for _, fd := range fds {
			f := os.NewFile(uintptr(fd), "conn")
			c, err := net.FileConn(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("floor: convert: %w", err)
			}
			conns = append(conns, c)
		}
		convert += time.Since(start)
		if _, err := unix.Write(ch, seq); err != nil {
			return os.NewSyscallError("write ack", err)
		}
	}
	fmt.Println(convert)
	var resumed sync.WaitGroup
	if err := resume(ch, waiting(conns, &resumed), &resumed); err != nil {
		return err
	}
	waitStdin()
	return nil
}

// waiter is a received connection's goroutine, started before the pause
// as the library starts them, waiting for its record.
type waiter struct {
	c      net.Conn
	record chan []byte
}

// waiting starts a waiter per connection; each, given its record, copies
// it into its read buffer, says so on resumed and blocks in Read.
func waiting(conns []net.Conn, resumed *sync.WaitGroup) (ws []waiter) {
	resumed.Add(len(conns))
	for _, c := range conns {
		w := waiter{c: c, record: make(chan []byte, 1)}
		go func() {
			buf := make([]byte, 4096)
			n := copy(buf, <-w.record)
			resumed.Done()
			w.c.Read(buf[n:])
		}()
		ws = append(ws, w)
	}
	return ws
}

// resume takes the parked records, wakes each record's waiter with it, and
// says 'R' once every one of them has resumed.
func resume(ch int, ws []waiter, resumed *sync.WaitGroup) error {
	for got := 0; got < len(ws); {
		buf := make([]byte, recordsPerFrame*RecordBytes) // the waiters keep their parts
		n, err := unix.Read(ch, buf)
		if err != nil || n == 0 || n%RecordBytes != 0 {
			return fmt.Errorf("floor: records frame of %d bytes: %v", n, err)
		}
		for i := 0; i < n; i += RecordBytes {
			id := binary.BigEndian.Uint64(buf[i:])
			if id >= uint64(len(ws)) {
				return fmt.Errorf("floor: record for connection %d of %d", id, len(ws))
			}
			ws[id].record <- buf[i : i+RecordBytes : i+RecordBytes]
		}
		got += n / RecordBytes
	}
	resumed.Wait()
	_, err := unix.Write(ch, []byte{'R'})
	return os.NewSyscallError("write resumed", err)
}

func recvFds(ch int, buf, oob []byte) ([]int, []byte, error) {
	n, oobn, flags, _, err := unix.Recvmsg(ch, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, nil, os.NewSyscallError("recvmsg", err)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return nil, nil, errors.New("floor: fds truncated (MSG_CTRUNC)")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, nil, fmt.Errorf("floor: %d control messages, %v", len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	return fds, buf[:n], err
}

// growFdTable makes the fd table as large as it will need to be, once,
// up front: each doubling later would wait for RCU (shared/LIMITS.md).
func growFdTable(n int) error {
	high := n + 256
	devnull, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(devnull)
	// F_DUPFD, not dup3: dup3 would close an fd already open at high.
	fd, err := unix.FcntlInt(uintptr(devnull), unix.F_DUPFD_CLOEXEC, high)
	if err != nil {
		return os.NewSyscallError("fcntl F_DUPFD", err)
	}
	return unix.Close(fd)
}
