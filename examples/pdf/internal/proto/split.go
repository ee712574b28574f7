package proto

import (
	"bytes"
	"errors"
)

// MaxLine is the longest request line, in bytes, not counting its "\n" or
// "\r\n" terminator.
const MaxLine = 4096

// ErrTooLong is returned by SplitLine when a line exceeds MaxLine. The server
// answers it with TooLong and closes the connection: it cannot find the next
// request boundary without reading an unbounded line.
var ErrTooLong = errors.New("proto: request line too long")

// SplitLine is a bufio.SplitFunc like bufio.ScanLines, except that it refuses
// lines longer than MaxLine instead of buffering them.
func SplitLine(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		line := dropCR(data[:i])
		if len(line) > MaxLine {
			return 0, nil, ErrTooLong
		}
		return i + 1, line, nil
	}
	// Without a newline yet, MaxLine bytes plus a possible '\r' may still
	// become a valid line.
	if len(data) > MaxLine+1 || (len(data) == MaxLine+1 && data[MaxLine] != '\r') {
		return 0, nil, ErrTooLong
	}
	if atEOF && len(data) > 0 {
		// A final unterminated line, as bufio.ScanLines takes it.
		return len(data), dropCR(data), nil
	}
	return 0, nil, nil
}

func dropCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}
