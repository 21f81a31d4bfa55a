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

func TestArgsConfigKill(t *testing.T) {
	s := Start(t, Options{Config: "maxmemory 12mb\n", Args: []string{"--hz", "17"}})
	ctx := context.Background()
	c := s.Client()
	if got := c.ConfigGet(ctx, "maxmemory").Val()["maxmemory"]; got != "12582912" {
		t.Errorf("maxmemory from Config = %q, want 12582912", got)
	}
	if got := c.ConfigGet(ctx, "hz").Val()["hz"]; got != "17" {
		t.Errorf("hz from Args = %q, want 17", got)
	}
	s.Kill()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered after Kill")
	}
	s.Resume()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Resume: %v", err)
	}
}
