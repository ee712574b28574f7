package demo

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// brokenBinary is a "new version" that dies before it can take over, so
// the upgrade must fail and the old process carry on.
const brokenBinary = "#!/bin/sh\nexit 3\n"

// install deploys the binary from src over dst the way a package manager
// does: write a new file beside it, then rename over it. The running
// process keeps its old inode; the next upgrade starts the new one.
func install(dst string, src io.Reader) error {
	tmp := dst + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("demo: install: %w", err)
	}
	_, err = io.Copy(f, src)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("demo: install %s: %w", dst, err)
	}
	return nil
}

// installVersion deploys binDir/pdf-<label>, or the broken binary for
// the label "broken".
func installVersion(dst, binDir, label string) error {
	if label == labelBroken {
		return install(dst, strings.NewReader(brokenBinary))
	}
	src, err := os.Open(filepath.Join(binDir, "pdf-"+label))
	if err != nil {
		return fmt.Errorf("demo: install: %w", err)
	}
	defer src.Close()
	return install(dst, src)
}
