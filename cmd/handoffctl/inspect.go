package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/handoff-dev/handoff/statefile"
)

// inspect prints what the state file at path holds: its header, a line per
// section and, once the whole file has been read and its checksum
// verified, "checksum: ok". It prints as it reads, so that for a damaged
// file w shows how far the file was good. Its errors name path; those of
// a damaged file wrap statefile.ErrCorrupt.
func inspect(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err // an *fs.PathError, which names path
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	// The Reader takes a few bytes at a time between chunks; buffering
	// spares a system call for each.
	sr, err := statefile.NewReader(bufio.NewReaderSize(f, 64<<10))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	printHeader(w, sr.Header(), info.Size())
	if err := printSections(w, sr); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Fprintln(w, "checksum: ok")
	return nil
}

// printHeader prints the header. Names are quoted: they are arbitrary
// bytes, and an operator's terminal should not interpret them.
func printHeader(w io.Writer, h statefile.Header, size int64) {
	fmt.Fprintf(w, "app:        %q\n", h.App)
	fmt.Fprintf(w, "schema:     %d\n", h.Schema)
	fmt.Fprintf(w, "generation: %d\n", h.Generation)
	fmt.Fprintf(w, "created:    %s\n", h.Created.UTC().Format(time.RFC3339))
	// NewReader accepts only the version this package reads.
	fmt.Fprintf(w, "format:     %d\n", statefile.FormatVersion)
	fmt.Fprintf(w, "size:       %d bytes\n", size)
}

// printSections prints a line per section once it has read the section
// through. io.Copy reads it with the Reader's Read a buffer at a time, so
// a section of any size is counted without being held, and each chunk's
// CRC is checked on the way. Next returns io.EOF only once the end record
// and the file's checksum are verified.
func printSections(w io.Writer, sr *statefile.Reader) error {
	for i := 0; ; i++ {
		name, err := sr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, sr)
		if err != nil {
			// The error may not name the section; this line does, and
			// says how many of its bytes were good.
			fmt.Fprintf(w, "section %d: %q, unreadable after %d bytes\n", i, name, n)
			return err
		}
		fmt.Fprintf(w, "section %d: %q, %d bytes\n", i, name, n)
	}
}
