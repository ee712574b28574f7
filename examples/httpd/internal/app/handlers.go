package app

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

// maxSlow bounds /slow?ms=N.
const maxSlow = time.Minute

// maxEcho bounds the body POST /echo holds.
const maxEcho = 1 << 20

// routes are the httpd_requests_total label values, each continued across
// upgrades.
var routes = []string{"/", "/slow", "/echo", "other"}

// newHandler answers GET /, GET /slow?ms=N and POST /echo, calling count
// with the route of every request it answers.
func newHandler(version string, count func(route string)) http.Handler {
	id := fmt.Sprintf("%s %d", version, os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		count("/")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, id)
	})
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		count("/slow")
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		d := time.Duration(ms) * time.Millisecond
		if err != nil || ms < 0 || d > maxSlow {
			http.Error(w, fmt.Sprintf("ms: want 0 to %d", maxSlow.Milliseconds()), http.StatusBadRequest)
			return
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return // the client left
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s slept %d\n", id, ms)
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		count("/echo")
		// The whole body first: once a reply outgrows its 2 KiB buffer,
		// net/http sends the head and discards the rest of the request
		// body, so a handler that answers while it reads loses what has
		// not arrived yet.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEcho))
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			http.Error(w, fmt.Sprintf("body: at most %d bytes", maxEcho), http.StatusRequestEntityTooLarge)
			return
		case err != nil: // a broken body, or the client left
			http.Error(w, fmt.Sprintf("body: %v", err), http.StatusBadRequest)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		count("other")
		http.NotFound(w, r)
	})
	return mux
}
