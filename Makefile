test:
	go vet ./...
	go test -race -count=1 -timeout 30m ./...

run:
	go run ./cmd/equalizer -demo

bench:
	bench/run.sh

.PHONY: test run bench
