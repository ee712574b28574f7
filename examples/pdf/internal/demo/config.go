package demo

import (
	"cmp"
	"fmt"
	"math"
	"net"
	"os"
	"time"
)

// Defaults applied to zero fields of a Config.
const (
	DefaultBinDir      = "bin"
	DefaultConns       = 200
	DefaultRate        = 4000
	DefaultChurn       = 100
	DefaultStepTimeout = 30 * time.Second
)

// Config describes one run of the scenario. Zero fields mean the
// documented default.
type Config struct {
	// BinDir holds the pdf-v1, pdf-v2 and handoffctl binaries. Default
	// DefaultBinDir.
	BinDir string

	// Dir is the work directory: the deployed binary, pid file, state file
	// and server.log live there. Default: a fresh temporary directory,
	// removed after a pass and kept after a failure. A Dir given here is
	// never removed.
	Dir string

	// Addr is the address the server listens on. Default: a port on
	// 127.0.0.1 that was free a moment before the start.
	Addr string

	// Conns is the number of persistent pipelining connections of the
	// load. Default DefaultConns.
	Conns int

	// Rate is the load's total requests per second over the persistent
	// connections. Default DefaultRate.
	Rate float64

	// Churn is how many short-lived connections the load opens per
	// second. Default DefaultChurn.
	Churn float64

	// Settle is how long the load runs before the first upgrade, between
	// two upgrades and after the last. Default MinSettle for Conns and
	// Rate; a shorter Settle makes the pids-per-connection check likely
	// to fail though nothing went wrong.
	Settle time.Duration

	// StepTimeout bounds each upgrade, from SIGHUP or handoffctl to the
	// old process gone (or the failure logged), handoffctl's own run, and
	// the first start. Default DefaultStepTimeout.
	StepTimeout time.Duration
}

// versionShare is the smallest share of VERSION requests in loadcheck's
// random mix (7% once a connection has seen v2, 15% before).
const versionShare = 0.07

// missChance bounds the chance that some persistent connection never asks
// some server VERSION, which fails the run though nothing went wrong.
const missChance = 1e-4

// minSettleFloor keeps a quick load from upgrading in a burst.
const minSettleFloor = 2 * time.Second

// MinSettle is the shortest Settle with which each of servers processes,
// each serving for Settle, is asked VERSION by each of conns connections
// sharing rate requests per second, with a chance of failure below 1e-4.
//
// The mix is random, so a connection sends no VERSION in n requests with
// chance (1-0.07)^n; 200 connections at 4000/s need about 11 s per server.
func MinSettle(conns int, rate float64, servers int) time.Duration {
	if conns <= 0 || rate <= 0 || servers <= 0 {
		return minSettleFloor
	}
	// Union bound over every (connection, server) pair.
	n := math.Log(missChance/float64(conns*servers)) / math.Log1p(-versionShare)
	perConn := rate / float64(conns)
	d := time.Duration(math.Ceil(n / perConn * float64(time.Second)))
	return max(d.Round(100*time.Millisecond), minSettleFloor)
}

// withDefaults fills zero fields. made reports whether it created Dir.
func (c Config) withDefaults(servers int) (_ Config, made bool, err error) {
	c.BinDir = cmp.Or(c.BinDir, DefaultBinDir)
	c.Conns = cmp.Or(c.Conns, DefaultConns)
	c.Rate = cmp.Or(c.Rate, DefaultRate)
	c.Churn = cmp.Or(c.Churn, DefaultChurn)
	c.Settle = cmp.Or(c.Settle, MinSettle(c.Conns, c.Rate, servers))
	c.StepTimeout = cmp.Or(c.StepTimeout, DefaultStepTimeout)
	if c.Addr == "" {
		if c.Addr, err = freeAddr(); err != nil {
			return c, false, err
		}
	}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "pdfdemo-"); err != nil {
			return c, false, fmt.Errorf("demo: work dir: %w", err)
		}
		made = true
	}
	return c, made, nil
}

// freeAddr picks a port the kernel calls free now; the server binds it a
// moment later, which is racy only against another process doing the same.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("demo: pick a port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
