//go:build !demo

package main

import "github.com/spf13/cobra"

// runDemo without the demo tag: the production binary links neither
// miniredis nor the fake API.
func (d *demoCmd) runDemo(*cobra.Command) error {
	return usageError("this enqueue is built without the demo, to keep the in-memory Redis and the fake API out of production binaries; run it with: make demo (go run -tags demo ./cmd/enqueue demo)")
}
