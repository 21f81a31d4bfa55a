package redistest

import (
	"context"
	"testing"
)

func TestStartRestart(t *testing.T) {
	s := Start(t, Options{AppendOnly: true})
	ctx := context.Background()
	c := s.Client()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	if got := c.Get(ctx, "k").Val(); got != "v" {
		t.Fatalf("after restart got %q, want v", got)
	}
	st, _ := s.CommandStats(ctx)
	if st["get"] < 1 {
		t.Fatalf("commandstats: %v", st)
	}
}
