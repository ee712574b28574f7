package statefile

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
	checkMessage(t, "full disk", err, path)
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

// An error of WriteFile or ReadFile is read by an operator: it names the
// file they chose, never the temporary one beside it, and says "statefile"
// once, however many layers it went through.
func TestFileErrorsNameThePath(t *testing.T) {
	s := counters()
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := s.WriteFile(good, cv1{1}, 0); err != nil {
		t.Fatal(err)
	}
	file, _ := os.ReadFile(good)
	corrupt := filepath.Join(dir, "corrupt")
	bad := bytes.Clone(file)
	bad[len(bad)/2] ^= 0x10
	os.WriteFile(corrupt, bad, 0o600)
	foreign := filepath.Join(dir, "foreign")
	other := NewSet("other", nil)
	save, load := one[cv1]("v1")
	Register(other, 1, save, load)
	other.WriteFile(foreign, cv1{1}, 0)
	inTheWay := filepath.Join(dir, "in-the-way")
	os.Mkdir(inTheWay, 0o700)

	for _, tc := range []struct {
		name, path string
		op         func(path string) error
		is         error
	}{
		{"write into a missing directory", filepath.Join(dir, "missing", "state"),
			func(p string) error { return s.WriteFile(p, cv1{1}, 0) }, fs.ErrNotExist},
		{"write over a directory", inTheWay,
			func(p string) error { return s.WriteFile(p, cv1{1}, 0) }, syscall.EEXIST},
		{"read a missing file", filepath.Join(dir, "none"),
			func(p string) error { _, _, err := s.ReadFile(p, 1); return err }, fs.ErrNotExist},
		{"read a directory", inTheWay,
			func(p string) error { _, _, err := s.ReadFile(p, 1); return err }, syscall.EISDIR},
		{"read a corrupt file", corrupt,
			func(p string) error { _, _, err := s.ReadFile(p, 1); return err }, ErrChecksum},
		{"read another application's file", foreign,
			func(p string) error { _, _, err := s.ReadFile(p, 1); return err }, ErrWrongApp},
	} {
		err := tc.op(tc.path)
		if !errors.Is(err, tc.is) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.is)
			continue
		}
		checkMessage(t, tc.name, err, tc.path)
	}
	if ents, _ := os.ReadDir(inTheWay); len(ents) != 0 {
		t.Errorf("a failed write left %v behind", ents)
	}
}

func checkMessage(t *testing.T, what string, err error, path string) {
	t.Helper()
	msg := err.Error()
	if !strings.Contains(msg, path) || strings.Contains(msg, ".tmp-") || strings.Count(msg, "statefile:") != 1 {
		t.Errorf("%s: %q: want the path %s, no temporary file, and \"statefile:\" once", what, msg, path)
	}
}

func TestRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "marker")
	os.WriteFile(path, nil, 0o600)
	for range 2 { // the second time, there is nothing to remove
		if err := Remove(path); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("still there: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "full")
	os.MkdirAll(filepath.Join(dir, "x"), 0o700)
	if err := Remove(dir); err == nil {
		t.Fatal("removed a directory that is not empty")
	} else {
		checkMessage(t, "remove", err, dir)
	}
}

func TestMoveAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	os.WriteFile(path, []byte("kept"), 0o600)
	aside, err := MoveAside(path, "reset")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := filepath.Match(AsidePattern(path, "reset"), aside); !ok {
		t.Fatalf("moved to %s, which %s does not match", aside, AsidePattern(path, "reset"))
	}
	if b, _ := os.ReadFile(aside); string(b) != "kept" {
		t.Fatalf("%s holds %q", aside, b)
	}
	_, err = MoveAside(path, "reset") // nothing there any more
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNotExist", err)
	}
	checkMessage(t, "move aside", err, path)
}
