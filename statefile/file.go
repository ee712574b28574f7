package statefile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// WriteFile replaces the file at path with what write writes, durably: it
// writes a temporary file in the same directory (mode 0600), fsyncs it,
// renames it over path and fsyncs the directory. A reader, or a crash at
// any moment, sees the old file or the new one, never a mix. On error
// (a full disk, say) the temporary file is removed and the old file is
// left as it was. The error names path and the step that failed, never
// the temporary file, and wraps the cause: errors.Is(err, syscall.ENOSPC)
// tells a full disk.
func WriteFile(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return wrap(bare(err), "write %s: create a temporary file beside it", path)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(bareFile{f}, 128<<10)
	if err := write(bw); err != nil {
		return wrap(err, "write %s", path)
	}
	if err := bw.Flush(); err != nil {
		return wrap(err, "write %s: write", path)
	}
	if err := f.Sync(); err != nil {
		return wrap(bare(err), "write %s: fsync", path)
	}
	if err := f.Close(); err != nil {
		return wrap(bare(err), "write %s: close", path)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return wrap(bare(err), "write %s: rename over it", path)
	}
	if err := syncDir(dir); err != nil {
		return wrap(bare(err), "write %s: fsync the directory", path)
	}
	return nil
}

// Remove removes the file at path durably: once it returns nil, a crash
// does not bring the file back. A file that does not exist is not an
// error.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return wrap(bare(err), "remove %s", path)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return wrap(bare(err), "remove %s: fsync the directory", path)
	}
	return nil
}

// syncDir makes a rename or a removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// bareFile is a file whose read and write errors do not name it: WriteFile's
// temporary file is nobody's business, and ReadFile names its file once.
type bareFile struct{ f *os.File }

func (b bareFile) Write(p []byte) (int, error) {
	n, err := b.f.Write(p)
	return n, bare(err)
}

func (b bareFile) Read(p []byte) (int, error) {
	n, err := b.f.Read(p)
	return n, bare(err)
}

// bare returns the cause of an error of the os package without the file
// names it carries.
func bare(err error) error {
	switch e := err.(type) {
	case *os.PathError:
		return e.Err
	case *os.LinkError:
		return e.Err
	}
	return err
}

// contextError adds context to an error that may already carry this
// package's prefix: it reads "statefile: context: cause", never
// "statefile: context: statefile: cause".
type contextError struct {
	context string
	err     error
}

func wrap(err error, format string, args ...any) error {
	return &contextError{context: fmt.Sprintf(format, args...), err: err}
}

func (e *contextError) Error() string {
	return "statefile: " + e.context + ": " + strings.TrimPrefix(e.err.Error(), "statefile: ")
}

func (e *contextError) Unwrap() error { return e.err }

// CorruptFileError is ReadFile's error for a file that failed validation.
// The file was moved to MovedTo for inspection, so that the next snapshot
// cannot overwrite it.
type CorruptFileError struct {
	Path    string
	MovedTo string // empty if the move failed; the file is still at Path
	Err     error  // wraps ErrCorrupt
}

func (e *CorruptFileError) Error() string {
	msg := wrap(e.Err, "read %s", e.Path).Error()
	if e.MovedTo == "" {
		return msg + " (could not move it aside)"
	}
	return msg + "; moved to " + e.MovedTo
}

func (e *CorruptFileError) Unwrap() error { return e.Err }

// ReadFile opens the file at path and gives it to read. If read fails with
// an error that wraps ErrCorrupt, the file is renamed aside (to
// path.corrupt-TIME; see MoveAside) and the error is a *CorruptFileError. A file that does not exist gives an error that wraps
// fs.ErrNotExist. Whether to start empty or to refuse to start is the
// caller's choice; either way read must not have applied anything, which
// Set.Load guarantees. A caller that refuses must also refuse a later start
// that finds no file at path but one moved aside (AsidePattern(path,
// "corrupt")), or that start would go on empty. Errors name path once.
func ReadFile(path string, read func(io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return wrap(bare(err), "open %s", path)
	}
	err = read(bufio.NewReaderSize(bareFile{f}, 64<<10))
	f.Close()
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrCorrupt) {
		return wrap(err, "read %s", path)
	}
	aside, rerr := MoveAside(path, "corrupt")
	if rerr != nil {
		aside = ""
	}
	return &CorruptFileError{Path: path, MovedTo: aside, Err: err}
}

// MoveAside renames the file at path to path.TAG-TIME (UTC, to the
// nanosecond) beside it, for inspection, and returns the new name. ReadFile
// moves corrupt files aside with the tag "corrupt".
func MoveAside(path, tag string) (string, error) {
	aside := fmt.Sprintf("%s.%s-%s", path, tag, time.Now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(path, aside); err != nil {
		return "", wrap(bare(err), "move %s aside to %s", path, aside)
	}
	return aside, nil
}

// AsidePattern is the filepath.Glob pattern of the files MoveAside moved
// from path with tag.
func AsidePattern(path, tag string) string { return path + "." + tag + "-*" }

// WriteFile writes state durably to path in its own schema; see the
// WriteFile function and Set.Save.
func (s *Set) WriteFile(path string, state any, generation uint64) error {
	return WriteFile(path, func(w io.Writer) error { return s.Save(w, state, generation) })
}

// ReadFile loads the state file at path migrated to schema want; see the
// ReadFile function and Set.Load.
func (s *Set) ReadFile(path string, want uint32) (state any, h Header, err error) {
	err = ReadFile(path, func(r io.Reader) error {
		state, h, err = s.Load(r, want)
		return err
	})
	return state, h, err
}
