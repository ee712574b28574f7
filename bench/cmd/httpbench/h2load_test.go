package main

import "testing"

const h2loadOutput = `starting benchmark...
spawning thread #0: 10 total client(s). Timing-based test with 0s of warm-up time and 3s of main duration for measurements.
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
TLS Protocol: TLSv1.3
Cipher: TLS_AES_128_GCM_SHA256
Server Temp Key: X25519 253 bits
Application protocol: h2
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 3.02s, 10968.67 req/s, 332.69KB/s
requests: 32906 total, 33006 started, 32906 done, 32900 succeeded, 6 failed, 4 errored, 2 timeout
status codes: 32921 2xx, 0 3xx, 0 4xx, 0 5xx
`

func TestParseH2load(t *testing.T) {
	r, err := parseH2load(h2loadOutput)
	if err != nil {
		t.Fatal(err)
	}
	want := h2loadResult{total: 32906, succeeded: 32900, failed: 6, errored: 4, timeout: 2, reqPerSec: 10968.67,
		protocol: "TLSv1.3 TLS_AES_128_GCM_SHA256 h2", raw: h2loadOutput}
	if r != want {
		t.Errorf("parseH2load:\n got %+v\nwant %+v", r, want)
	}
	if _, err := parseH2load("No protocol negotiated. Your server may not support HTTP/2\n"); err == nil {
		t.Error("parseH2load of a failed run: no error")
	}
}
