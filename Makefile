# Everything but e2e-systemd needs only Go: `make build`, `make test`, `make demo`.
GO ?= go
BIN := bin

.PHONY: build test e2e-systemd check-manifests e2e-pod demo fuzz bench bench-quick bench-statefile bench-tls bench-http bench-https bench-steady bench-chat clean

build:
	mkdir -p $(BIN)
	$(GO) build -o $(BIN)/handoffctl ./cmd/handoffctl
	$(GO) -C examples build -o $(CURDIR)/$(BIN)/pdf-v1 ./pdf/cmd/pdf-v1
	$(GO) -C examples build -o $(CURDIR)/$(BIN)/pdf-v2 ./pdf/cmd/pdf-v2
	$(GO) -C examples build -o $(CURDIR)/$(BIN)/pdfload ./pdf/cmd/pdfload
	$(GO) -C examples build -o $(CURDIR)/$(BIN)/pdfdemo ./pdf/cmd/pdfdemo
	$(GO) -C examples build -o $(CURDIR)/$(BIN)/httpd ./httpd/cmd/httpd
	$(GO) -C examples build -o $(CURDIR)/$(BIN)/chat ./chat/cmd/chat
	$(GO) -C examples build -o $(CURDIR)/$(BIN)/chatload ./chat/cmd/chatload
	$(GO) -C bench build -o $(CURDIR)/$(BIN)/upgradebench ./cmd/upgradebench
	$(GO) -C bench build -o $(CURDIR)/$(BIN)/httpbench ./cmd/httpbench
	$(GO) -C bench build -o $(CURDIR)/$(BIN)/schedlat ./cmd/schedlat

# gofmt, vet, and every test (multi-process ones included) under the race
# detector, in each module of the repository: the library (the root), and
# examples/, bench/ and systemd/e2e/, which have modules of their own so
# that the library's users do not get their dependencies. Then the library
# packages again with the lowest Go they support: the go line of go.mod,
# the toolchain fetched through the module proxy (GOTOOLCHAIN).
MODULES := . examples bench
LIBRARY := ./handoff/... ./statefile/... ./metrics/... ./systemd/... ./httphandoff/... ./tlshandoff/... ./wshandoff/... ./cmd/...
GO_MIN := $(shell sed -n 's/^go //p' go.mod)

test: build
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	@# Each go.mod requires exactly what its module imports (the root: only what the library does).
	@for m in $(MODULES) systemd/e2e; do echo "$(GO) -C $$m mod tidy -diff"; $(GO) -C $$m mod tidy -diff || exit 1; done
	@for m in $(MODULES); do echo "$(GO) -C $$m vet ./..."; $(GO) -C $$m vet ./... || exit 1; done
	$(GO) -C systemd/e2e vet -tags e2esystemd ./...
	@# The library builds where its users develop, and so does handoffctl
	@# (its tests are Linux's); upgrades themselves need Linux.
	GOOS=darwin $(GO) vet ./handoff/... ./systemd/... ./tlshandoff/... ./wshandoff/...
	GOOS=windows $(GO) vet ./handoff/... ./systemd/... ./tlshandoff/... ./wshandoff/...
	GOOS=darwin $(GO) build ./handoff/... ./statefile/... ./metrics/... ./systemd/... ./httphandoff/... ./tlshandoff/... ./wshandoff/... ./cmd/...
	GOOS=windows $(GO) build ./handoff/... ./statefile/... ./metrics/... ./systemd/... ./httphandoff/... ./tlshandoff/... ./wshandoff/... ./cmd/...
	GOTOOLCHAIN=go$(GO_MIN) $(GO) vet $(LIBRARY)
	GOTOOLCHAIN=go$(GO_MIN) $(GO) test -count=1 -timeout 20m $(LIBRARY)
	@for m in $(MODULES); do echo "$(GO) -C $$m test -race -count=1 -timeout 20m ./..."; \
		$(GO) -C $$m test -race -count=1 -timeout 20m ./... || exit 1; done

# The pdf example under a real systemd 252 (systemd-nspawn on a Debian 12
# root): systemctl reload under load, a reload that rolls back, socket
# activation, SIGKILL and systemctl restart with the fd store, the watchdog
# across upgrades (systemd/e2e/README.md). Needs root;
# systemd/e2e/setup installs the Debian packages systemd-container and
# debootstrap when missing and debootstraps the root into .cache/ once.
# RUN=TestName runs one scenario.
e2e-systemd: build
	systemd/e2e/setup
	$(GO) -C systemd/e2e test -tags e2esystemd -count=1 -v -timeout 30m $(if $(RUN),-run '$(RUN)') .

# The Kubernetes manifests of kubernetes/, without a cluster (kubectl's
# dry run needs one): each document decoded strictly into the Kubernetes
# API types, and the takeover's settings, the turn-taking pair and the
# SidecarSet's hot upgrade checked (kubernetes/e2e/manifests_test.go).
# Needs only Go; kubernetes/e2e is a module of its own, for k8s.io/api.
check-manifests:
	$(GO) -C kubernetes/e2e test -count=1 .

# Pods made from Kubernetes YAML by podman kube play (kubernetes/README.md):
# the facts of kubernetes/NOTES-facts.md that a takeover between the
# containers of a pod rests on, each measured again with real pods; the
# takeover scenarios on kubernetes/pod.yaml's pair (the turn-taking pair
# under the pdf load, broken images, a new container killed before the
# commit, httpd under wrk, both containers' probes at every step of a
# takeover, the SidecarSet's empty image and postStart hook); and the
# manifests' checks. Needs root;
# kubernetes/e2e/setup installs podman, runc and wrk with apt-get when
# missing and sets the runtime up (~1 min the first time).
# RUN=TestName runs one test.
e2e-pod:
	kubernetes/e2e/setup
	$(GO) -C kubernetes/e2e test -tags e2epod -count=1 -v -timeout 20m $(if $(RUN),-run '$(RUN)') .

# The pdf charging server under gateway load, upgraded live v1 -> v2 -> v2 -> v1,
# with one failed upgrade (a binary that exits at once) in between.
demo: build
	./$(BIN)/pdfdemo -bin $(BIN)

# Longer runs of the decoder fuzzers: handoff frames, state file container,
# state file payloads, a TLS connection's moved state and records from a
# TLS client, pdf ledger files. The seed corpora are in testdata/.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzFrames$$' -fuzztime 60s ./handoff/internal/wire/
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime 60s ./statefile/
	$(GO) test -run '^$$' -fuzz '^FuzzPayload$$' -fuzztime 60s ./statefile/
	$(GO) test -run '^$$' -fuzz '^FuzzState$$' -fuzztime 60s ./tlshandoff/
	$(GO) test -run '^$$' -fuzz '^FuzzRecords$$' -fuzztime 60s ./tlshandoff/
	$(GO) -C examples test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime 60s ./pdf/internal/ledger/

# The upgrade benchmark reported in bench/README.md (issue 21's run):
# every upgrade mode, and the same load without upgrades (none), at 1k,
# 10k and 15k connections under 10k req/s, 3 upgrades each, with the
# floors and the cost goals; then the all-at-once pause with a 1M-account
# ledger, with and without the pre-copy; then the library's cost between
# upgrades (bench-steady). ~20 min. Tables on stdout and in
# bench/results/upgrade.md, bench/results/precopy/precopy.md and
# bench/results/steady.md; JSON and charts beside them.
bench: build
	./$(BIN)/upgradebench -bin $(BIN) -modes full,rolling,listeners,restart,none -conns 1000,10000,15000 \
		-rate 10000 -churn 50 -duration 20s -upgrades 3 -out bench/results > bench/results/upgrade.md; \
		status=$$?; cat bench/results/upgrade.md; exit $$status
	mkdir -p bench/results/precopy
	./$(BIN)/upgradebench -bin $(BIN) -modes full,full-noprecopy -conns 1000 -accounts 1000000 \
		-rate 10000 -churn 50 -duration 20s -upgrades 3 -out bench/results/precopy > bench/results/precopy/precopy.md; \
		status=$$?; cat bench/results/precopy/precopy.md; exit $$status
	$(MAKE) bench-steady

# The same, small and short (under a minute), to try a change.
bench-quick: build
	./$(BIN)/upgradebench -bin $(BIN) -modes full,rolling,listeners,restart,none -conns 500 \
		-rate 5000 -churn 50 -duration 6s -upgrades 2 -out bench/results/quick

# The state file benchmark reported in bench/README.md.
bench-statefile:
	$(GO) -C examples test -run '^$$' -bench BenchmarkStateFile -benchtime 3x -benchmem ./pdf/internal/ledger/

# What moving a TLS connection costs next to a plain one, and what a TLS
# handshake costs (a client dropped at an upgrade comes back with one),
# reported in bench/README.md: testing.B benchmarks of tlshandoff (~1.5 min).
# Raw output in bench/results/tls.txt, then on stdout.
bench-tls:
	$(GO) test -run '^$$' -bench '^Benchmark(Move|Handshake)$$' -benchtime 2000x -count 5 -benchmem ./tlshandoff/ \
		> bench/results/tls.txt; status=$$?; cat bench/results/tls.txt; exit $$status

# HTTP servers upgraded every 2 s under the same wrk load, reported in
# bench/README.md: bin/httpd (full and listeners modes), nginx reload and
# binary upgrade, HAProxy master-worker reload (~2.5 min). Installs
# Debian's wrk, nginx and haproxy with apt-get when missing; loopback only.
# Table on stdout and in bench/results/http.md.
bench-http: build
	./$(BIN)/httpbench -bin $(BIN) -duration 22s -every 2s -upgrades 10 -conns 200 -threads 2 \
		-out bench/results/http.md

# The same over HTTPS, once with TLS 1.3 and once with TLS 1.2 (ECDHE
# AES-GCM), on a self-signed pair made at bench time: bin/httpd (full,
# rolling and listeners modes), nginx reload and binary upgrade, HAProxy
# reload, with the TLS handshakes each server counted; then h2load's
# HTTP/2 on each httpd mode (~7 min). Installs Debian's wrk, nginx,
# haproxy, openssl and nghttp2-client with apt-get when missing; loopback only.
# Table on stdout and in bench/results/https.md.
bench-https: build
	./$(BIN)/httpbench -bin $(BIN) -tls 1.3,1.2 -h2load-conns 20 -h2load-streams 10 \
		-duration 22s -every 2s -upgrades 10 -conns 200 -threads 2 -out bench/results/https.md

# What the library costs between upgrades, reported in bench/README.md:
# the same handlers on httpd as shipped and on httpd -plain (net/http, no
# library), 9 rounds of wrk -t2 -c200 -d10s each in turn, no upgrade; then
# pdf-v2 and pdf-v2 -plain under the same paced load (1000 connections,
# 10k req/s, 10 s), 9 rounds (single rounds spread by ±7% here, more than
# the 3% goal: the median of 9 is steadier than that of 5). Req/s, the
# server's CPU per request and the ratios library/plain (~8 min). Installs Debian's wrk with apt-get when
# missing; loopback only. Table on stdout and in bench/results/steady.md,
# each httpd's CPU profile in bench/results/steady/.
bench-steady: build
	./$(BIN)/httpbench -bin $(BIN) -steady 9 -duration 10s -conns 200 -threads 2 \
		-pdf-conns 1000 -pdf-rate 10000 -pdf-duration 10s \
		-profile bench/results/steady -out bench/results/steady.md

# The chat example (examples/chat) with 10,000 WebSocket clients in rooms of
# 10, upgraded 10 times in rolling mode, then the same server restarted in
# place 10 times (clients reconnect with jittered exponential backoff):
# reconnects per upgrade, messages lost, longest delivery gap, server CPU
# around each upgrade, reported in bench/README.md (~6 min). Table on
# stdout and in bench/results/chat/chat.md, with chatload's raw outputs.
bench-chat: build
	$(GO) -C bench build -o $(CURDIR)/$(BIN)/chatbench ./cmd/chatbench
	./$(BIN)/chatbench -bin $(BIN) -clients 10000 -room-size 10 -every 10s -upgrades 10 -upgrade-every 8s \
		-modes rolling,restart -out bench/results/chat

clean:
	rm -rf $(BIN)
