package statefile

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestWriteFileReplaces(t *testing.T) {
	s := counters("1>2", "2>1")
	path := filepath.Join(t.TempDir(), "state")
	for i, v := range []any{cv1{1}, cv2{2, "x"}} {
		if err := s.WriteFile(path, v, uint64(i)); err != nil {
			t.Fatal(err)
		}
		got, h, err := s.ReadFile(path, 1)
		if err != nil || h.Generation != uint64(i) {
			t.Fatalf("read back: %v, %+v, %v", got, h, err)
		}
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, %v; want 0600: state is nobody else's business", info.Mode(), err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("files left behind: %v", ents)
	}
}

func TestWriteFileFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	os.WriteFile(path, []byte("old"), 0o600)
	boom := errors.New("boom")
	err := WriteFile(path, func(w io.Writer) error {
		io.WriteString(w, "half")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	assertOnly(t, dir, path, "old")
}

func assertOnly(t *testing.T, dir, path, content string) {
	t.Helper()
	if got, _ := os.ReadFile(path); string(got) != content {
		t.Fatalf("file = %q after a failed save, want %q", got, content)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary file left behind: %v", ents)
	}
}

// A full disk, for real: a 64 KiB tmpfs and a state that does not fit.
func TestWriteFileDiskFull(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("cannot mount a tmpfs here (%v); the full-disk case needs root", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, 0) })
	path := filepath.Join(dir, "state")
	s := counters()
	if err := s.WriteFile(path, cv1{1}, 0); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path)
	big := cv3{Extra: make([]string, 100)}
	for i := range big.Extra {
		big.Extra[i] = string(pattern(1000))
	}
	err := s.WriteFile(path, big, 1)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	assertOnly(t, dir, path, string(old))
	if _, _, err := s.ReadFile(path, 1); err != nil {
		t.Fatalf("the old state no longer loads: %v", err)
	}
}

func TestReadFileMovesCorruptAside(t *testing.T) {
	s := counters()
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	s.WriteFile(path, cv1{1}, 0)
	good, _ := os.ReadFile(path)
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 0x10
	os.WriteFile(path, bad, 0o600)

	v, _, err := s.ReadFile(path, 1)
	var cf *CorruptFileError
	if !errors.As(err, &cf) || !errors.Is(err, ErrCorrupt) || v != nil {
		t.Fatalf("got %v, %v; want a CorruptFileError", v, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("corrupt file still at %s", path)
	}
	if kept, _ := os.ReadFile(cf.MovedTo); !bytes.Equal(kept, bad) {
		t.Fatalf("%s does not hold the corrupt file", cf.MovedTo)
	}
	if _, _, err := s.ReadFile(path, 1); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after the move: %v, want ErrNotExist", err)
	}
}

// A whole file that this program cannot use (another application, a
// newer container version, a schema it does not know) is not corrupt:
// it stays where it is.
func TestReadFileLeavesForeignFiles(t *testing.T) {
	s := counters()
	dir := t.TempDir()
	other := NewSet("other", nil)
	save, load := one[cv1]("v1")
	Register(other, 1, save, load)
	var buf bytes.Buffer
	other.Save(&buf, cv1{1}, 0)
	newer := bytes.Clone(buf.Bytes())
	newer[len(Magic)+1] = 2 // format version 2
	for name, file := range map[string][]byte{"other app": buf.Bytes(), "newer format": newer} {
		path := filepath.Join(dir, name)
		os.WriteFile(path, file, 0o600)
		if _, _, err := s.ReadFile(path, 1); err == nil || errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want an error that is not ErrCorrupt", name, err)
		}
		if got, _ := os.ReadFile(path); !bytes.Equal(got, file) {
			t.Errorf("%s: file moved or changed", name)
		}
	}
}
