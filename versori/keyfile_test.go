package versori

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKeyFileReadIsBounded: a key file that never ends (/dev/zero) or is
// far too long is refused after maxKeyFileBytes, not read without bound;
// a key of exactly the bound is still read.
func TestKeyFileReadIsBounded(t *testing.T) {
	start := time.Now()
	_, err := New(Config{APIKeyFile: "/dev/zero"})
	if err == nil || !strings.Contains(err.Error(), "longer than 4096 bytes") {
		t.Errorf("/dev/zero: %v; want a too-long error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("/dev/zero took %s to refuse", d)
	}
	dir := t.TempDir()
	long := filepath.Join(dir, "long")
	if err := os.WriteFile(long, []byte(strings.Repeat("k", maxKeyFileBytes+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{APIKeyFile: long}); err == nil || !strings.Contains(err.Error(), "longer than") || strings.Contains(err.Error(), "kkkk") {
		t.Errorf("long file: %v", err)
	}
	exact := filepath.Join(dir, "exact")
	if err := os.WriteFile(exact, []byte(strings.Repeat("k", maxKeyFileBytes)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{APIKeyFile: exact}); err != nil {
		t.Errorf("a key of %d bytes: %v", maxKeyFileBytes, err)
	}
}

// TestKeyFileReadTimesOut: a FIFO nobody writes to fails within the
// timeout, saying so, instead of hanging the start.
func TestKeyFileReadTimesOut(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "key")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := readKeyFile(fifo, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no key read within 200ms") {
		t.Errorf("FIFO: %v; want a timeout naming the wait", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("FIFO took %s", d)
	}
	// Unblock the reader left behind so the test leaves no goroutine stuck.
	if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
		f.Close()
	}
}
