// Command podprobe measures, from inside two containers of one pod, what a
// takeover between containers can rely on: whether a Unix socket in the
// shared emptyDir connects, what SO_PEERCRED says across PID namespaces,
// whether abstract Unix sockets are shared, and whether a listening TCP
// socket and an established connection with unread bytes pass from one
// container to the other with SCM_RIGHTS. It uses only the standard
// library so that it builds static for a FROM scratch image.
//
//	podprobe id [DIR]           print uid, gid, groups, pid and DIR's mode
//	podprobe serve DIR          container A: listen, hand over, check
//	podprobe take DIR [WAIT]    container B: connect (retrying for WAIT,
//	                            default 30s), take over, serve
//	podprobe exit CODE          print id, then exit with CODE
//
// Every line it prints is "podprobe: KEY=VALUE ..." for the test to read.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

const (
	sockName = "probe.sock"     // in the shared directory
	abstract = "@handoff-probe" // in the network namespace's abstract space
	tcpAddr  = "127.0.0.1:9100" // the listener that moves
	unread   = "unread-by-A"    // bytes A leaves in the connection for B
	newConn  = "after-takeover" // what a client sends B on a new connection
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: podprobe id|serve DIR|take DIR|exit CODE")
	}
	var err error
	switch os.Args[1] {
	case "id":
		dir := ""
		if len(os.Args) > 2 {
			dir = os.Args[2]
		}
		printID(dir)
		return
	case "exit":
		printID("")
		code, _ := strconv.Atoi(arg(2))
		os.Exit(code)
	case "serve":
		err = serve(arg(2))
	case "take":
		err = take(arg(2))
	default:
		fail("unknown command " + os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func arg(i int) string {
	if len(os.Args) <= i {
		fail("missing argument")
	}
	return os.Args[i]
}

func fail(msg string) {
	fmt.Printf("podprobe: error=%q\n", msg)
	os.Exit(1)
}

func say(format string, a ...any) { fmt.Printf("podprobe: "+format+"\n", a...) }

func printID(dir string) {
	groups, _ := os.Getgroups()
	say("role=%s uid=%d gid=%d groups=%v pid=%d ppid=%d", os.Args[1],
		os.Getuid(), os.Getgid(), groups, os.Getpid(), os.Getppid())
	if dir != "" {
		if st, err := os.Stat(dir); err == nil {
			s := st.Sys().(*syscall.Stat_t)
			say("dir=%s mode=%v owner=%d:%d", dir, st.Mode(), s.Uid, s.Gid)
		}
	}
}

// peer reads SO_PEERCRED: the kernel reports the pid as seen from the
// reader's PID namespace, 0 when the peer's process is not in it.
func peer(c *net.UnixConn) (syscall.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return syscall.Ucred{}, err
	}
	var cred *syscall.Ucred
	var serr error
	err = raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return syscall.Ucred{}, os.NewSyscallError("getsockopt SO_PEERCRED", err)
	}
	return *cred, nil
}

// serve is container A: it owns a TCP listener and one accepted connection
// holding bytes it has not read, waits for B on both Unix sockets, sends
// both TCP fds to B, closes its own copies, and checks as a client that B
// now serves the old connection (its unread bytes first) and new ones.
func serve(dir string) error {
	printID(dir)
	path := filepath.Join(dir, sockName)
	os.Remove(path)
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen %s: %w", path, err)
	}
	if st, err := os.Stat(path); err == nil {
		s := st.Sys().(*syscall.Stat_t)
		say("socket=%s mode=%v owner=%d:%d", path, st.Mode(), s.Uid, s.Gid)
	}
	al, err := net.ListenUnix("unix", &net.UnixAddr{Name: abstract, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen %s: %w", abstract, err)
	}
	tl, err := net.Listen("tcp", tcpAddr)
	if err != nil {
		return err
	}
	client, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		return err
	}
	accepted, err := tl.Accept()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(client, unread+"\n"); err != nil {
		return err
	}
	say("ready=1 listener=%s unread=%q", tcpAddr, unread)

	// The abstract socket first: B says hello there, then on the path.
	go func() {
		for {
			c, err := al.AcceptUnix()
			if err != nil {
				return
			}
			cred, err := peer(c)
			say("abstract_accepted=1 peer_uid=%d peer_gid=%d peer_pid=%d err=%v", cred.Uid, cred.Gid, cred.Pid, err)
			io.WriteString(c, "hello-abstract\n")
			c.Close()
		}
	}()
	uc, err := ul.AcceptUnix()
	if err != nil {
		return err
	}
	cred, err := peer(uc)
	if err != nil {
		return err
	}
	say("path_accepted=1 peer_uid=%d peer_gid=%d peer_pid=%d", cred.Uid, cred.Gid, cred.Pid)

	files := make([]int, 0, 2)
	for _, s := range []syscall.Conn{tl.(*net.TCPListener), accepted.(*net.TCPConn)} {
		raw, err := s.SyscallConn()
		if err != nil {
			return err
		}
		var dup int
		var derr error
		raw.Control(func(fd uintptr) { dup, derr = syscall.Dup(int(fd)) })
		if derr != nil {
			return os.NewSyscallError("dup", derr)
		}
		files = append(files, dup)
	}
	if _, _, err := uc.WriteMsgUnix([]byte("fds"), syscall.UnixRights(files...), nil); err != nil {
		return fmt.Errorf("sendmsg: %w", err)
	}
	for _, fd := range files {
		syscall.Close(fd)
	}
	tl.Close()
	accepted.Close() // B holds the connection now; A's close must not end it
	say("sent=listener,conn")

	line, err := bufio.NewReader(uc).ReadString('\n')
	if err != nil {
		return fmt.Errorf("B's report: %w", err)
	}
	say("b_reported=%q", line[:len(line)-1])

	client.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := bufio.NewReader(client).ReadString('\n')
	if err != nil {
		return fmt.Errorf("the old connection after the handover: %w", err)
	}
	say("old_conn_reply=%q", got[:len(got)-1])
	c2, err := net.DialTimeout("tcp", tcpAddr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("a new connection after the handover: %w", err)
	}
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c2, newConn+"\n")
	got, err = bufio.NewReader(c2).ReadString('\n')
	if err != nil {
		return fmt.Errorf("the new connection's reply: %w", err)
	}
	say("new_conn_reply=%q", got[:len(got)-1])
	say("done=1")
	// Stay up so that the pod's other facts can be measured around it.
	select {}
}

// take is container B.
func take(dir string) error {
	printID(dir)
	path := filepath.Join(dir, sockName)
	var uc *net.UnixConn
	var err error
	wait := 30 * time.Second
	if len(os.Args) > 3 {
		if wait, err = time.ParseDuration(os.Args[3]); err != nil {
			return err
		}
	}
	for deadline := time.Now().Add(wait); ; time.Sleep(100 * time.Millisecond) {
		uc, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("connect %s: %w", path, err)
	}
	cred, err := peer(uc)
	if err != nil {
		return err
	}
	say("path_connected=1 peer_uid=%d peer_gid=%d peer_pid=%d", cred.Uid, cred.Gid, cred.Pid)

	if ac, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: abstract, Net: "unix"}); err != nil {
		say("abstract_connected=0 err=%q", err.Error())
	} else {
		cred, _ := peer(ac)
		line, _ := bufio.NewReader(ac).ReadString('\n')
		say("abstract_connected=1 peer_pid=%d read=%q", cred.Pid, line)
		ac.Close()
	}

	buf := make([]byte, 16)
	oob := make([]byte, syscall.CmsgSpace(2*4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return fmt.Errorf("recvmsg: %w", err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("control messages: %d, %v", len(msgs), err)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 2 {
		return fmt.Errorf("fds: %v, %v", fds, err)
	}
	say("received=%q fds=%d", buf[:n], len(fds))
	lf := os.NewFile(uintptr(fds[0]), "listener")
	cf := os.NewFile(uintptr(fds[1]), "conn")
	ln, err := net.FileListener(lf)
	if err != nil {
		return fmt.Errorf("listener from fd: %w", err)
	}
	conn, err := net.FileConn(cf)
	if err != nil {
		return fmt.Errorf("conn from fd: %w", err)
	}
	lf.Close()
	cf.Close()

	conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read the unread bytes: %w", err)
	}
	say("conn_read=%q", line[:len(line)-1])
	io.WriteString(conn, "B:"+line)
	fmt.Fprintf(uc, "took listener %s and a connection from %s\n", ln.Addr(), conn.RemoteAddr())

	c, err := ln.Accept()
	if err != nil {
		return err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err = bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	say("new_conn_read=%q", line[:len(line)-1])
	io.WriteString(c, "B:"+line)
	c.Close()
	conn.Close()
	say("done=1")
	return nil
}
