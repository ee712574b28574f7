package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proc is a line of /proc/PID/stat, the fields this harness needs.
type proc struct {
	pid, ppid, pgrp int
	state           byte
}

// procs lists every process on the machine.
func procs() []proc {
	ents, _ := os.ReadDir("/proc")
	var ps []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 >= len(s) {
			continue
		}
		f := strings.Fields(s[i+2:])
		if len(f) < 3 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		pgrp, _ := strconv.Atoi(f[2])
		ps = append(ps, proc{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0][0]})
	}
	return ps
}

// children returns the live (not zombie) children of ppid.
func children(ppid int) map[int]bool {
	kids := map[int]bool{}
	for _, p := range procs() {
		if p.ppid == ppid && p.state != 'Z' {
			kids[p.pid] = true
		}
	}
	return kids
}

// alive says whether pid runs (exists and is not a zombie).
func alive(pid int) bool {
	for _, p := range procs() {
		if p.pid == pid {
			return p.state != 'Z'
		}
	}
	return false
}

// group returns the live processes of process group pgid.
func group(pgid int) []int {
	var pids []int
	for _, p := range procs() {
		if p.pgrp == pgid && p.state != 'Z' {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// reapOrphans collects the zombies that were reparented to this process
// (a child subreaper): an old nginx master's successor, an old httpd's.
// skip is a child that its exec.Cmd waits for.
func reapOrphans(skip int) {
	me := os.Getpid()
	for _, p := range procs() {
		if p.ppid == me && p.state == 'Z' && p.pid != skip {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(p.pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// killGroup ends every process of group pgid: SIGTERM, then SIGKILL for
// what is left after grace. It reports the pids that survived both.
func killGroup(pgid int, grace time.Duration, skip int) []int {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && len(group(pgid)) > 0 {
		time.Sleep(20 * time.Millisecond)
	}
	if len(group(pgid)) > 0 {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(200 * time.Millisecond)
	}
	reapOrphans(skip)
	return group(pgid)
}

// poll calls cond every 10 ms until it is true or d has passed.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readPID reads a pid file; 0 if there is none.
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
