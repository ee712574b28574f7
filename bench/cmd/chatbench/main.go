// Command chatbench is make bench-chat: the chat example (bin/chat) with
// many WebSocket clients (bin/chatload) upgraded on a schedule, once per
// mode: rolling (the connections move) and restart (the server executes
// itself again; clients reconnect with jittered exponential backoff). It
// reports, per mode, what chatload measured (reconnects per upgrade,
// messages lost, longest delivery gap) and the server CPU around each
// upgrade, and writes the raw outputs to -out.
//
// Server CPU: chatbench is the child subreaper of every server process
// (each new process is the old one's child; orphaned, it becomes
// chatbench's), so an exited process stays a zombie whose
// /proc/PID/stat still gives its user and system time until the end.
// Around upgrade i: the CPU of every server process from the SIGHUP
// until the upgrade ended (rolling: the old process gone; restart: every
// client back) plus -window, less what they spend in as long at the rate
// of the -window before the SIGHUP.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"
)

type config struct {
	bin, out, modes             string
	clients, roomSize, upgrades int
	every, upgradeEvery, window time.Duration
	minBackoff, maxBackoff      time.Duration
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "bin", "`dir` holding chat and chatload")
	flag.StringVar(&c.out, "out", "bench/results/chat", "`dir` for the raw outputs")
	flag.StringVar(&c.modes, "modes", "rolling,restart", "upgrade modes to run, in order")
	flag.IntVar(&c.clients, "clients", 10000, "chat clients")
	flag.IntVar(&c.roomSize, "room-size", 10, "clients per room")
	flag.IntVar(&c.upgrades, "upgrades", 10, "upgrades per mode")
	flag.DurationVar(&c.every, "every", 10*time.Second, "each client sends one message per `interval`")
	flag.DurationVar(&c.upgradeEvery, "upgrade-every", 8*time.Second, "`interval` between upgrades")
	flag.DurationVar(&c.window, "window", 3*time.Second, "CPU baseline before each SIGHUP, and margin after its end")
	flag.DurationVar(&c.minBackoff, "min-backoff", 500*time.Millisecond, "clients' first reconnect delay ceiling")
	flag.DurationVar(&c.maxBackoff, "max-backoff", 20*time.Second, "clients' largest reconnect delay ceiling")
	flag.Parse()
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		log.Fatal(err)
	}
	if err := becomeSubreaper(); err != nil {
		log.Fatal(err)
	}
	var rows []row
	for _, mode := range strings.Split(c.modes, ",") {
		r, err := runMode(c, mode)
		if err != nil {
			log.Fatalf("%s: %v", mode, err)
		}
		rows = append(rows, r)
	}
	table := render(c, rows)
	fmt.Print(table)
	if err := os.WriteFile(filepath.Join(c.out, "chat.md"), []byte(table), 0o644); err != nil {
		log.Fatal(err)
	}
	b, _ := json.MarshalIndent(rows, "", "  ")
	if err := os.WriteFile(filepath.Join(c.out, "chat.json"), b, 0o644); err != nil {
		log.Fatal(err)
	}
}
