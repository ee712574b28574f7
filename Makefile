# Everything needs only Go: `make build`, `make test`, `make demo`.
GO ?= go
BIN := bin

.PHONY: build test demo fuzz clean

build:
	mkdir -p $(BIN)
	$(GO) build -o $(BIN)/pdf-v1 ./examples/pdf/cmd/pdf-v1
	$(GO) build -o $(BIN)/pdf-v2 ./examples/pdf/cmd/pdf-v2
	$(GO) build -o $(BIN)/pdfload ./examples/pdf/cmd/pdfload
	$(GO) build -o $(BIN)/pdfdemo ./examples/pdf/cmd/pdfdemo
	$(GO) build -o $(BIN)/handoffctl ./cmd/handoffctl

# gofmt, vet, and every test (multi-process ones included) under the race detector.
test: build
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

# The pdf charging server under gateway load, upgraded live v1 -> v2 -> v2 -> v1,
# with one failed upgrade (a binary that exits at once) in between.
demo: build
	./$(BIN)/pdfdemo -bin $(BIN)

# A longer run of the handoff frame decoder fuzzer.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeFrames -fuzztime 60s ./handoff/

clean:
	rm -rf $(BIN)
