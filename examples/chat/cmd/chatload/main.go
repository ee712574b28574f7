// Command chatload is the chat example's load generator: it holds chat
// and echo clients on a chat server, sends on a schedule, checks every
// message each client gets, reconnects dropped clients with jittered
// exponential backoff, and can upgrade the server with SIGHUP on a
// schedule. It prints a summary, and with -json writes the report.
// 10,000 clients fit in one process (RLIMIT_NOFILE is 20000 here).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/handoff-dev/handoff/examples/chat/internal/load"
)

func main() {
	var cfg load.Config
	var jsonOut string
	flag.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8090", "the chat server")
	flag.IntVar(&cfg.Clients, "clients", 1000, "chat `clients`")
	flag.IntVar(&cfg.RoomSize, "room-size", 10, "chat clients per room")
	flag.IntVar(&cfg.Echo, "echo", 0, "echo `clients` (GET /ws/echo)")
	flag.DurationVar(&cfg.Every, "every", time.Second, "each client sends one message per `interval`")
	flag.DurationVar(&cfg.Duration, "duration", 0, "how long to send (0: (upgrades+1) × upgrade-every)")
	flag.DurationVar(&cfg.Settle, "settle", 30*time.Second, "after the last send, how long at most to wait for what is in flight")
	flag.IntVar(&cfg.Upgrades, "upgrades", 0, "SIGHUP the server this many `times`")
	flag.DurationVar(&cfg.UpgradeEvery, "upgrade-every", 5*time.Second, "`interval` between SIGHUPs")
	flag.StringVar(&cfg.PIDFile, "pidfile", "", "the server's pid `file` (for -upgrades)")
	flag.BoolVar(&cfg.Restart, "restart", false, "the server restarts in place (-upgrade-mode restart): an upgrade ends once every client is back")
	flag.DurationVar(&cfg.MinBackoff, "min-backoff", 500*time.Millisecond, "first reconnect delay's ceiling (full jitter)")
	flag.DurationVar(&cfg.MaxBackoff, "max-backoff", 20*time.Second, "largest reconnect delay's ceiling")
	flag.StringVar(&jsonOut, "json", "", "write the report as JSON to `file`")
	flag.Parse()
	cfg.Logf = func(f string, a ...any) { log.Printf(f, a...) }
	r, err := load.Run(cfg)
	if err != nil {
		log.Fatal(err)
	}
	if jsonOut != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(jsonOut, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Print(r.Summary())
	if !r.Clean() {
		os.Exit(3)
	}
}
