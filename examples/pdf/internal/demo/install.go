package demo

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/handoff-dev/handoff/internal/proc"
)

// brokenBinary is a "new version" that dies before it can take over, so
// the upgrade must fail and the old process carry on.
const brokenBinary = "#!/bin/sh\nexit 3\n"

// installVersion deploys binDir/pdf-<label>, or the broken binary for
// the label "broken".
func installVersion(dst, binDir, label string) error {
	if label == labelBroken {
		return proc.Install(dst, strings.NewReader(brokenBinary))
	}
	src, err := os.Open(filepath.Join(binDir, "pdf-"+label))
	if err != nil {
		return fmt.Errorf("demo: install: %w", err)
	}
	defer src.Close()
	if err := proc.Install(dst, src); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}
