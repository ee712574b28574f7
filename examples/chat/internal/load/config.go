package load

import (
	"errors"
	"time"
)

// Config is one load run.
type Config struct {
	URL      string        // the server, ws://host:port
	Clients  int           // chat clients
	RoomSize int           // clients per room
	Echo     int           // echo clients
	Every    time.Duration // each client sends one message per Every
	Duration time.Duration // how long clients send; 0: (Upgrades+1) × UpgradeEvery
	Settle   time.Duration // after the last send, how long at most to wait for what is in flight
	Dialers  int           // dials at once while connecting

	// Upgrades of the server: SIGHUP to the pid in PIDFile, every
	// UpgradeEvery from the first send on, each once the last has ended.
	Upgrades     int
	UpgradeEvery time.Duration
	PIDFile      string
	Restart      bool // the server restarts in place (same pid): an upgrade ends once every client has reconnected

	MinBackoff, MaxBackoff time.Duration // reconnect delays, before jitter

	Logf func(format string, args ...any) // progress; nil: none
}

func (c *Config) defaults() error {
	if c.URL == "" || c.Clients < 0 || c.Echo < 0 || c.Clients+c.Echo == 0 {
		return errors.New("load: a URL and some clients are needed")
	}
	if c.RoomSize <= 0 {
		c.RoomSize = 10
	}
	if c.Every <= 0 {
		c.Every = time.Second
	}
	if c.UpgradeEvery <= 0 {
		c.UpgradeEvery = 5 * time.Second
	}
	if c.Duration <= 0 {
		c.Duration = time.Duration(c.Upgrades+1) * c.UpgradeEvery
	}
	if c.Settle <= 0 {
		c.Settle = 30 * time.Second
	}
	if c.Dialers <= 0 {
		c.Dialers = 64
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 500 * time.Millisecond // centrifuge-js minReconnectDelay
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 20 * time.Second // centrifuge-js maxReconnectDelay
	}
	if c.Upgrades > 0 && c.PIDFile == "" {
		return errors.New("load: upgrades need the server's pid file")
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return nil
}
