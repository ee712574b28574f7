module github.com/handoff-dev/handoff/kubernetes/e2e

go 1.26.6
