package statefile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// WriteFile replaces the file at path with what write writes, durably: it
// writes a temporary file in the same directory (mode 0600), fsyncs it,
// renames it over path and fsyncs the directory. A reader, or a crash at
// any moment, sees the old file or the new one, never a mix. On error
// (a full disk, say) the temporary file is removed and the old file is
// left as it was.
func WriteFile(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("statefile: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("statefile: write %s: %w", path, err)
		}
	}()
	bw := bufio.NewWriterSize(f, 128<<10)
	if err := write(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// CorruptFileError is ReadFile's error for a file that failed validation.
// The file was moved to MovedTo for inspection, so that the next snapshot
// cannot overwrite it and the next start does not trip on it again.
type CorruptFileError struct {
	Path    string
	MovedTo string // empty if the move failed; the file is still at Path
	Err     error  // wraps ErrCorrupt
}

func (e *CorruptFileError) Error() string {
	if e.MovedTo == "" {
		return fmt.Sprintf("statefile: %s: %v (could not move it aside)", e.Path, e.Err)
	}
	return fmt.Sprintf("statefile: %s: %v; moved to %s", e.Path, e.Err, e.MovedTo)
}

func (e *CorruptFileError) Unwrap() error { return e.Err }

// ReadFile opens the file at path and gives it to read. If read fails with
// an error that wraps ErrCorrupt, the file is renamed aside (to
// path.corrupt-TIME) and the error is a *CorruptFileError. A file that
// does not exist gives an error that wraps fs.ErrNotExist. Whether to
// start empty or to refuse to start is the caller's choice; either way
// read must not have applied anything, which Set.Load guarantees.
func ReadFile(path string, read func(io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("statefile: %w", err)
	}
	err = read(bufio.NewReaderSize(f, 64<<10))
	f.Close()
	if err == nil || !errors.Is(err, ErrCorrupt) {
		return err
	}
	aside := fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405.000000000Z"))
	if rerr := os.Rename(path, aside); rerr != nil {
		aside = ""
	}
	return &CorruptFileError{Path: path, MovedTo: aside, Err: err}
}

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
