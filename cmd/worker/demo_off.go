//go:build !demo

package main

import (
	"errors"
	"log/slog"
)

// startDemo without the demo tag: the production worker links neither the
// in-memory Redis nor the fake API. Build with -tags demo for --demo.
func startDemo(*config, *slog.Logger) (func(), error) {
	return nil, errors.New("this worker is built without the demo (it keeps the in-memory Redis and the fake API out of production binaries); build it with -tags demo, or run `make demo`")
}
