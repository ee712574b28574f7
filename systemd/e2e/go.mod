module github.com/handoff-dev/handoff/systemd/e2e

go 1.26.6
