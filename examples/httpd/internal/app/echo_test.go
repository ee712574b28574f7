package app

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEchoBodyInPieces: a body over 2 KiB whose second piece comes only
// once the handler runs (after the test has seen it count the request) is
// echoed whole. A handler that answers while it reads gets the rest of
// the body discarded by net/http once its reply outgrows 2 KiB.
func TestEchoBodyInPieces(t *testing.T) {
	h := startHTTPD(t)
	body := bytes.Repeat([]byte("0123456789abcdef"), 5000/16+1)[:5000]
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // a safety net
	head := fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", len(body))
	if _, err := c.Write(append([]byte(head), body[:3000]...)); err != nil {
		t.Fatal(err)
	}
	// The pause: the handler runs, with the first piece to read.
	h.awaitMetric(t, `httpd_requests_total{route="/echo"} 1`)
	if _, err := c.Write(body[3000:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, body) {
		t.Errorf("POST /echo in two pieces: %d, %d bytes back of %d, %v", resp.StatusCode, len(got), len(body), err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q, want the request's", ct)
	}
}

// TestEchoTooLarge: a body over the echo's bound is refused (413), not
// held.
func TestEchoTooLarge(t *testing.T) {
	h := startHTTPD(t)
	c := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true}} // a safety net
	resp, err := c.Post(h.url("/echo"), "application/octet-stream", io.LimitReader(zeros{}, maxEcho+1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("POST /echo of %d bytes: %d, want 413", maxEcho+1, resp.StatusCode)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestDefaultModeRolling: without -upgrade-mode, httpd upgrades in rolling
// mode, which httphandoff's docs recommend for HTTP servers.
func TestDefaultModeRolling(t *testing.T) {
	h := startHTTPD(t)
	if line := h.logs.await(t, "msg=serving", fmt.Sprintf("pid=%d ", h.pid)); !strings.Contains(line, " upgrade_mode=rolling") {
		t.Errorf("serving without -upgrade-mode: %s, want upgrade_mode=rolling", line)
	}
}

// TestParkTimeout: a full-mode upgrade with a request in flight longer
// than the library's default park timeout (2 s) commits when -park-timeout
// gives the connection time to finish it; the old process answers it.
func TestParkTimeout(t *testing.T) {
	h := startHTTPD(t, "-upgrade-mode", modeFull, "-park-timeout", "20s")
	slow := make(chan string, 1)
	go func() {
		resp, err := fresh.Get(h.url("/slow?ms=3000"))
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- string(b)
	}()
	h.awaitMetric(t, `httpd_requests_total{route="/slow"} 1`)
	if err := syscall.Kill(h.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line := h.logs.await(t, fmt.Sprintf("pid=%d ", h.pid), "msg=\"upgrade ")
	if !strings.Contains(line, `msg="upgrade starting"`) {
		t.Fatalf("first upgrade line: %s", line)
	}
	line = h.logs.await(t, fmt.Sprintf("pid=%d ", h.pid), "msg=\"upgrade ", "took=")
	if !strings.Contains(line, `msg="upgrade complete"`) {
		t.Fatalf("the upgrade with a 3 s request in flight and -park-timeout 20s: %s", line)
	}
	if body := <-slow; body != fmt.Sprintf("v1 %d slept 3000\n", h.pid) {
		t.Errorf("the request in flight: %q, want the old process's reply", body)
	}
	h.stop(t, readPID(t, h.pidfile))
}
