package result

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// WriteJSON writes the suite to path as indented JSON. It writes a
// temporary file in the same directory and renames it over path, so a
// reader, or a benchmark killed halfway, never leaves a truncated result:
// path holds either the old file or the whole new one.
func (s *Suite) WriteJSON(path string) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("result: encode %s: %w", path, err)
	}
	data = append(data, '\n')
	if err := writeAtomic(path, data); err != nil {
		return fmt.Errorf("result: write %s: %w", path, err)
	}
	return nil
}

// ReadJSON reads a suite that WriteJSON wrote. Fields it does not know
// are ignored, so that an older reader can open a newer file.
func ReadJSON(path string) (*Suite, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("result: %w", err)
	}
	var s Suite
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("result: decode %s: %w", path, err)
	}
	return &s, nil
}

// writeAtomic replaces path with data through a temporary file, synced
// before the rename so that the rename never exposes an empty file after
// a crash.
func writeAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	// CreateTemp makes the file 0600; a result is for everyone to read.
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
