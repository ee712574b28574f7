package httphandoff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// frameStream is a byte stream of frames as x/net or a client writes
// them, and the frames a reader must see in it.
func frameStream(t testing.TB, preface bool) ([]byte, []frame) {
	var b bytes.Buffer
	if preface {
		b.WriteString(http2.ClientPreface)
	}
	fr := http2.NewFramer(&b, nil)
	var want []frame
	add := func(typ http2.FrameType, flags http2.Flags, stream uint32, err error) {
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, frame{typ: typ, flags: flags, stream: stream})
	}
	add(http2.FrameSettings, 0, 0, fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20}))
	add(http2.FrameSettings, http2.FlagSettingsAck, 0, fr.WriteSettingsAck())
	add(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte("hpack"), EndHeaders: true}))
	add(http2.FrameData, 0, 1, fr.WriteData(1, false, bytes.Repeat([]byte("x"), 70000)))
	add(http2.FrameData, http2.FlagDataEndStream, 1, fr.WriteData(1, true, nil))
	ping := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	add(http2.FramePing, 0, 0, fr.WritePing(false, ping))
	want[len(want)-1].ping = ping
	add(http2.FramePing, http2.FlagPingAck, 0, fr.WritePing(true, ping))
	want[len(want)-1].ping = ping
	add(http2.FrameWindowUpdate, 0, 3, fr.WriteWindowUpdate(3, 1000))
	add(http2.FrameGoAway, 0, 0, fr.WriteGoAway(7, http2.ErrCodeNo, []byte("bye")))
	return b.Bytes(), want
}

// scanAll scans b in pieces of size n and returns the frames and the
// offsets after each.
func scanAll(s *frameScanner, b []byte, n int) ([]frame, []int) {
	var frames []frame
	var ends []int
	off := 0
	for off < len(b) {
		piece := b[off:min(off+n, len(b))]
		for len(piece) > 0 {
			k, f := s.next(piece)
			piece = piece[k:]
			off += k
			if f != nil {
				frames = append(frames, *f)
				ends = append(ends, off)
			}
		}
	}
	return frames, ends
}

// TestFrameScanner: the scanner finds every frame, its header and a
// PING's payload, with the stream cut in pieces of any size, and is at a
// boundary exactly between frames.
func TestFrameScanner(t *testing.T) {
	for _, preface := range []bool{false, true} {
		b, want := frameStream(t, preface)
		ref := &frameScanner{}
		if preface {
			ref.preface = clientPrefaceLen
		}
		_, ends := scanAll(ref, b, len(b))
		for _, n := range []int{1, 2, 5, 8, 9, 10, 17, 4096, len(b)} {
			s := &frameScanner{}
			if preface {
				s.preface = clientPrefaceLen
			}
			got, gotEnds := scanAll(s, b, n)
			if !slices.Equal(got, want) {
				t.Fatalf("preface %v, pieces of %d: frames\n%v\nwant\n%v", preface, n, got, want)
			}
			if !slices.Equal(gotEnds, ends) || !s.atBoundary() || s.frames != uint(len(want)) {
				t.Fatalf("pieces of %d: ends %v, want %v", n, gotEnds, ends)
			}
		}
		// Between frames and only there.
		s := &frameScanner{}
		if preface {
			s.preface = clientPrefaceLen
		}
		for i := range b {
			k, _ := s.next(b[i : i+1])
			if k != 1 {
				t.Fatalf("byte %d: consumed %d", i, k)
			}
			between := slices.Contains(ends, i+1) || preface && i+1 == clientPrefaceLen
			if s.atBoundary() != between {
				t.Fatalf("after byte %d: atBoundary %v", i, s.atBoundary())
			}
		}
	}
}

// FuzzFrameScanner: any bytes, cut anywhere, give the same frames as in
// one piece, and every byte is consumed.
func FuzzFrameScanner(f *testing.F) {
	b, _ := frameStream(f, true)
	f.Add(b[:200], 10) // the preface, SETTINGS, HEADERS, the start of DATA
	f.Add([]byte{0, 0, 8, 6, 1, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, 3)
	f.Add([]byte{0xff, 0xff, 0xff, 6, 0, 0, 0, 0, 0}, 1)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		n = max(1, min(n, len(b)+1))
		whole, wholeEnds := scanAll(&frameScanner{preface: clientPrefaceLen}, b, len(b)+1)
		cut, cutEnds := scanAll(&frameScanner{preface: clientPrefaceLen}, b, n)
		if !slices.Equal(whole, cut) || !slices.Equal(wholeEnds, cutEnds) {
			t.Fatalf("in pieces of %d: %v at %v; in one: %v at %v", n, cut, cutEnds, whole, wholeEnds)
		}
	})
}

// wire is a net.Conn that records what is written to it and reads what
// the test gives it.
type wire struct {
	net.Conn // nil: only Read and Write are used
	mu       sync.Mutex
	out      bytes.Buffer
	in       chan []byte
}

func (w *wire) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(p)
}

func (w *wire) Read(p []byte) (int, error) {
	b, ok := <-w.in
	if !ok {
		return 0, io.EOF
	}
	return copy(p, b), nil // the test hands pieces no larger than p
}

// frames names the frames written, by type, and a GOAWAY's code and
// last stream.
func (w *wire) frames(t *testing.T) string {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	fr := http2.NewFramer(nil, bytes.NewReader(w.out.Bytes()))
	var s []string
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			return strings.Join(s, " ")
		}
		if err != nil {
			t.Fatalf("the written stream breaks after %v: %v", s, err)
		}
		name := f.Header().Type.String()
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			name += fmt.Sprintf("(%v,%d)", ga.ErrCode, ga.LastStreamID)
		}
		s = append(s, name)
	}
}

// TestH2ConnWritesBetweenFrames: the first GOAWAY and the PING go out
// only between two of x/net's frames, after its SETTINGS, never inside
// a frame x/net wrote in two pieces; and never after x/net's own GOAWAY.
func TestH2ConnWritesBetweenFrames(t *testing.T) {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	_ = fr.WriteSettings()
	settings := slices.Clone(b.Bytes())
	b.Reset()
	_ = fr.WriteData(1, true, bytes.Repeat([]byte("d"), 1000))
	data := slices.Clone(b.Bytes())
	b.Reset()
	_ = fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	goaway := slices.Clone(b.Bytes())

	t.Run("not before SETTINGS", func(t *testing.T) {
		w := &wire{}
		c := newH2Conn(w, func() {})
		c.goAway()
		c.flush() // what goAway's goroutine does, maybe not yet
		if w.out.Len() != 0 {
			t.Fatalf("wrote %d bytes before x/net's preface", w.out.Len())
		}
		c.Write(settings[:5])
		c.Write(settings[5:])
		if got := w.frames(t); got != "SETTINGS GOAWAY(NO_ERROR,2147483647) PING" {
			t.Fatalf("wrote %s", got)
		}
	})
	t.Run("not inside a frame", func(t *testing.T) {
		w := &wire{}
		c := newH2Conn(w, func() {})
		c.Write(settings)
		c.Write(data[:300]) // bufio flushed part of a frame
		c.goAway()
		c.flush()
		n, err := c.Write(append(slices.Clone(data[300:]), settings...))
		if err != nil || n != len(data)-300+len(settings) {
			t.Fatalf("Write: %d, %v", n, err)
		}
		if got := w.frames(t); got != "SETTINGS DATA GOAWAY(NO_ERROR,2147483647) PING SETTINGS" {
			t.Fatalf("wrote %s", got)
		}
	})
	t.Run("at once when idle", func(t *testing.T) {
		w := &wire{}
		c := newH2Conn(w, func() {})
		c.Write(settings)
		c.goAway()
		c.flush()
		if got := w.frames(t); got != "SETTINGS GOAWAY(NO_ERROR,2147483647) PING" {
			t.Fatalf("wrote %s", got)
		}
	})
	t.Run("never after x/net's GOAWAY", func(t *testing.T) {
		w := &wire{}
		c := newH2Conn(w, func() {})
		c.Write(append(slices.Clone(settings), goaway...))
		c.goAway()
		c.flush()
		c.Write(data)
		if got := w.frames(t); got != "SETTINGS GOAWAY(NO_ERROR,1) DATA" {
			t.Fatalf("wrote %s", got)
		}
	})
}

// TestH2ConnFinalAfterAck: x/net's graceful shutdown starts at the first
// Read after the client's ACK of our PING, not before, and not for an
// ACK with other data or one that came before our PING went out.
func TestH2ConnFinalAfterAck(t *testing.T) {
	var settings bytes.Buffer
	_ = http2.NewFramer(&settings, nil).WriteSettings()
	ack := func(data [8]byte) []byte {
		var b bytes.Buffer
		_ = http2.NewFramer(&b, nil).WritePing(true, data)
		return b.Bytes()
	}
	w := &wire{in: make(chan []byte, 16)}
	finals := 0
	c := newH2Conn(w, func() { finals++ })
	read := func(b []byte) {
		t.Helper()
		for len(b) > 0 { // as io.ReadFull of x/net's sizes would
			w.in <- b[:min(len(b), 9)]
			p := make([]byte, min(len(b), 9))
			if n, err := c.Read(p); err != nil || n != len(p) {
				t.Fatalf("Read: %d, %v", n, err)
			}
			b = b[len(p):]
		}
	}
	read([]byte(http2.ClientPreface))
	read(ack(c.ping)) // before our PING: a guess
	c.Write(settings.Bytes())
	c.goAway()
	c.flush()
	read(ack([8]byte{9}))
	read(settings.Bytes())
	if finals != 0 {
		t.Fatalf("final GOAWAY started %d times before the ACK", finals)
	}
	read(ack(c.ping))
	if finals != 0 {
		t.Fatal("final GOAWAY started before x/net asked for the frame after the ACK")
	}
	read(settings.Bytes())
	read(ack(c.ping))
	read(settings.Bytes())
	if finals != 1 {
		t.Fatalf("final GOAWAY started %d times, want 1", finals)
	}
}

// TestH2NoStreamRefused drives x/net's server through h2Conn over a real
// socket: a client that sent a new stream after the first GOAWAY was
// written, but before it read it, has that stream answered, and the
// final GOAWAY names it; a stream in flight before finishes too.
func TestH2NoStreamRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	release := make(chan struct{})
	srvConn := make(chan *h2Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		h2, hs := &http2.Server{}, &http.Server{}
		if err := http2.ConfigureServer(hs, h2); err != nil {
			panic(err)
		}
		c := newH2Conn(nc, func() { _ = hs.Shutdown(context.Background()) })
		srvConn <- c
		h2.ServeConn(c, &http2.ServeConnOpts{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hold" {
				<-release
			}
			io.WriteString(w, "ok "+r.URL.Path)
		})})
		c.Close()
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fr := http2.NewFramer(nc, nc)
	io.WriteString(nc, http2.ClientPreface)
	fr.WriteSettings()
	fr.WriteSettingsAck() // ahead of the server's SETTINGS: allowed
	sc := <-srvConn
	get(t, fr, 1, "/hold")

	// The first GOAWAY is written (in the socket's buffer, unread) ...
	sc.goAway()
	for !sc.wrote.Load() || func() bool { sc.wmu.Lock(); defer sc.wmu.Unlock(); return sc.pending != nil }() {
		time.Sleep(time.Millisecond)
	}
	// ... and the client, not having read it, opens stream 3.
	get(t, fr, 3, "/late")
	var frames []string
	var last uint32
	answered := map[uint32]string{}
	ended := map[uint32]bool{}
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	for !ended[1] || !ended[3] || last == 0 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %v: %v", frames, err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			frames = append(frames, fmt.Sprintf("GOAWAY %d", f.LastStreamID))
			if f.ErrCode != http2.ErrCodeNo {
				t.Fatalf("GOAWAY %v", f.ErrCode)
			}
			if f.LastStreamID != 1<<31-1 {
				last = f.LastStreamID
				close(release)
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				frames = append(frames, "PING")
				fr.WritePing(true, f.Data)
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("stream %d reset: %v", f.StreamID, f.ErrCode)
		case *http2.DataFrame:
			answered[f.StreamID] += string(f.Data())
			ended[f.StreamID] = f.StreamEnded()
		}
	}
	if want := "GOAWAY 2147483647 PING GOAWAY 3"; strings.Join(frames, " ") != want {
		t.Fatalf("frames %q, want %q", strings.Join(frames, " "), want)
	}
	if answered[1] != "ok /hold" || answered[3] != "ok /late" {
		t.Fatalf("answers %v", answered)
	}
}

// get opens stream id with GET path on a plain connection.
func get(t *testing.T, fr *http2.Framer, id uint32, path string) {
	t.Helper()
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "localhost"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}
