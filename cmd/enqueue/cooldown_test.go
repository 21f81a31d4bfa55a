package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ratebudget"
)

// A 429 with Retry-After: 99999999 on one queue's fleet shows in
// `enqueue cooldown` for that queue only, and --clear ends it.
func TestCoolDownShowsAndClears(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	b, err := ratebudget.New(rdb, ratebudget.Config{Limit: 10, Key: ratebudget.KeyForQueue("hostile")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reserve(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.CoolDown(context.Background(), 99999999*time.Second); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"REDIS_URL": "redis://" + m.Addr()}

	other := cli(t, env, "", "cooldown", "--queue", "imports", "--json")
	if other.code != 0 || !strings.Contains(other.stdout, `"cooldown_seconds":0`) {
		t.Fatalf("another queue's fleet: %+v, want no cool-down", other)
	}
	r := cli(t, env, "", "cooldown", "--queue", "hostile")
	if r.code != 0 || !strings.Contains(r.stdout, "cool-down  10m") || !strings.Contains(r.stdout, "enqueue cooldown --clear") {
		t.Fatalf("cooldown: %+v, want the capped 10-minute cool-down and how to clear it", r)
	}
	r = cli(t, env, "", "cooldown", "--queue", "hostile", "--clear", "--json")
	var st fleetState
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 {
		t.Fatalf("cooldown --clear --json: %+v (%v)", r, err)
	}
	if st.CoolDownSeconds != 0 || st.Cleared < 590 || st.Breaker != "closed" || st.Ceiling != 10 {
		t.Fatalf("after --clear: %+v", st)
	}
	if r := cli(t, env, "", "cooldown", "--close-breaker"); r.code != 2 {
		t.Fatalf("--close-breaker without --clear: exit %d, want 2", r.code)
	}
}
