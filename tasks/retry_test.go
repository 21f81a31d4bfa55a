package tasks

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/versori/import-worker/versori"
)

func TestBackoffFullJitterCapped(t *testing.T) {
	b := Backoff{Base: time.Second, Cap: 30 * time.Second, Rand: func() float64 { return 0.999999 }}
	boom := errors.New("503")
	for n, want := range map[int]time.Duration{0: time.Second, 1: 2 * time.Second, 4: 16 * time.Second, 5: 30 * time.Second, 40: 30 * time.Second, 1000: 30 * time.Second} {
		got := b.Delay(n, boom)
		if got > want || got < want-want/1000 {
			t.Errorf("Delay(%d) = %s, want just under %s", n, got, want)
		}
	}
	b.Rand = func() float64 { return 0 }
	if got := b.Delay(3, boom); got != 0 {
		t.Errorf("full jitter must reach 0, got %s", got)
	}
}

func TestBackoffHonoursRetryLater(t *testing.T) {
	b := Backoff{Jitter: 100 * time.Millisecond, Rand: func() float64 { return 0.5 }}
	err := fmt.Errorf("wrapped: %w", &RetryLaterError{Class: versori.ClassRateLimited, Delay: 3 * time.Second})
	if got := b.Delay(7, err); got != 3*time.Second+50*time.Millisecond {
		t.Fatalf("Delay = %s, want the asked delay plus jitter", got)
	}
}

func TestIsFailure(t *testing.T) {
	if IsFailure(&RetryLaterError{Class: versori.ClassRateLimited}) {
		t.Error("a RetryLaterError must not use up an attempt")
	}
	if IsFailure(fmt.Errorf("x: %w", &RetryLaterError{Class: versori.ClassUnauthorized})) {
		t.Error("a wrapped RetryLaterError must not use up an attempt")
	}
	if !IsFailure(errors.New("503")) {
		t.Error("a plain error is a failure")
	}
}

// A failure the handler already held (waiting for the fleet's verdict)
// retries that much sooner, never before now; it is still a failure.
func TestBackoffCountsTheHold(t *testing.T) {
	b := Backoff{Base: time.Second, Cap: time.Minute, Rand: func() float64 { return 0.5 }}
	held := &heldError{err: errors.New("503"), held: 300 * time.Millisecond}
	if got := b.Delay(0, held); got != 200*time.Millisecond {
		t.Fatalf("Delay = %s, want 500ms drawn less the 300ms held", got)
	}
	if got := b.Delay(0, &heldError{err: errors.New("503"), held: time.Hour}); got != 0 {
		t.Fatalf("Delay = %s, want 0", got)
	}
	if !IsFailure(held) || held.Error() != "503" || !errors.Is(held, held.err) {
		t.Fatal("a held failure is still the failure it wraps")
	}
	if (Backoff{}).withDefaults().Base != DefaultBackoffBase {
		t.Fatal("default base")
	}
}
