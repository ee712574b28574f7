package handoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// osProcess sets e's process-level effects to the operating system's.
func osProcess(e *env) {
	e.kill = func(pid int, sig syscall.Signal) error { return os.NewSyscallError("kill", unix.Kill(pid, sig)) }
	e.start = execProcess
	e.checkParent = peerIsParent
	e.dialTakeover = dialPacket
	e.joinGroup = rejoinParentGroup
}

// execProcess starts the binary in dir with this process's arguments and
// environment, the handoff channel at fd 3 and the listeners after it.
// It returns the process and this process's end of the channel.
func execProcess(binary, dir string, lns []handedListener) (*newProcess, *net.UnixConn, error) {
	ours, theirs, err := socketpair()
	if err != nil {
		return nil, nil, err
	}
	defer theirs.Close()
	files, keys := listenerFiles(lns)
	defer closeFiles(files)
	cmd := &exec.Cmd{
		Path:        binary,
		Args:        append([]string{binary}, os.Args[1:]...),
		Env:         append(os.Environ(), envFds+"="+encodeFds(keys)),
		Dir:         dir,
		Stdin:       os.Stdin,
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		ExtraFiles:  append([]*os.File{theirs}, files...),
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, nil, fmt.Errorf("handoff: %w: %w", errStart, err)
	}
	pid := cmd.Process.Pid
	p := &newProcess{pid: pid, exited: make(chan struct{}), sigkill: func() {
		_ = unix.Kill(-pid, unix.SIGKILL)
		_ = unix.Kill(pid, unix.SIGKILL)
	}}
	go func() {
		p.err = cmd.Wait()
		ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
		p.byKill = ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
		close(p.exited)
	}()
	return p, ours, nil
}

// socketpair makes the handoff channel: a connected pair that nobody else
// can reach, unlike a path in the file system.
func socketpair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handoff: %w", os.NewSyscallError("socketpair", err))
	}
	f := os.NewFile(uintptr(fds[0]), "handoff-channel")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("handoff: channel: %w", err)
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "handoff-channel"), nil
}

// listenerFiles returns a duplicate of every listening socket, for the new
// process, and their names. A listener the application closed is left out.
func listenerFiles(lns []handedListener) ([]*os.File, []string) {
	var files []*os.File
	var keys []string
	for _, p := range lns {
		fd, err := dupConnFd(p.ln)
		if err != nil {
			continue
		}
		files, keys = append(files, os.NewFile(uintptr(fd), p.key)), append(keys, p.key)
	}
	return files, keys
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// kill ends the new process and its process group, and waits until it
// has exited: only then can nothing it did race with this process
// resuming the connections. SIGKILL cannot be refused; the bound is for a
// process stuck in the kernel.
func (p *newProcess) kill() error {
	if p.sigkill == nil {
		return nil // a peer: not this process's to kill
	}
	select {
	case <-p.exited:
		return nil // reaped: its pid and group may be another's now
	default:
	}
	p.killed.Store(true)
	p.sigkill()
	select {
	case <-p.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("handoff: new process %d did not die of SIGKILL in 10s", p.pid)
	}
}

// describe says how the new process ended, if it has.
func (p *newProcess) describe() error {
	select {
	case <-p.exited:
	default:
		return nil
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return fmt.Errorf("%w: pid %d, %s", errExited, p.pid, ee.ProcessState)
	}
	if p.err != nil {
		return fmt.Errorf("%w: pid %d: %w", errExited, p.pid, p.err)
	}
	return fmt.Errorf("%w: pid %d, exit status 0", errExited, p.pid)
}

// ownEnd says how the new process ended if it ended on its own, nil if
// it has not ended or died of kill's SIGKILL. A process already exiting
// when kill signals keeps its own status: the kernel fixes the exit code
// before it closes the process's fds.
func (p *newProcess) ownEnd() error {
	if p.killed.Load() && p.byKill {
		return nil
	}
	return p.describe()
}

// rejoinParentGroup moves a committed new process into its old process's
// process group, where a shell's or a supervisor's group signals reach it.
func rejoinParentGroup(ppid int) error {
	if unix.Getpgrp() != os.Getpid() {
		return nil // not started in a group of its own
	}
	pgid, err := unix.Getpgid(ppid)
	if err != nil {
		return os.NewSyscallError("getpgid", err)
	}
	return os.NewSyscallError("setpgid", unix.Setpgid(0, pgid))
}
