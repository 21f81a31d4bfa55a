// Package e2e holds the end-to-end tests: real worker binaries, real Redis,
// the fake API, counted from the outside.
package e2e

import (
	"os"
	"testing"

	"github.com/versori/import-worker/internal/e2etest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	e2etest.Cleanup()
	os.Exit(code)
}
