package ledger_test

import (
	"context"
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
)

var exponent = regexp.MustCompile(`[0-9][eE][+-]?[0-9]`)

// The Redis layout is an on-disk format that other tools read: this pins it
// down as the package documentation describes it, on every Lua engine
// (their JSON encoders differ in key order and escaping, not in content).
func TestStoredLayout(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l, clk := newLedger(t, rdb, prefix, "ok", "bad", "wait")
		base := prefix + ":rollout:{r1}:"
		clk.Advance(1500 * time.Millisecond)
		now := clk.Now().UnixMilli()
		if _, err := l.Finish(ctx, "r1", "ok", ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200,
			ConnectorID: "01HZX", Version: "1.2.0 </b>", Duration: 20513 * time.Microsecond, CountAttempt: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Finish(ctx, "r1", "bad", ledger.Outcome{State: ledger.Failed, Class: "not_found", HTTPStatus: 404,
			Error: `version "9" not found / gone`}); err != nil {
			t.Fatal(err)
		}
		if err := l.Attempt(ctx, "r1", "wait", ledger.Attempt{Class: "server_error", HTTPStatus: 503, Duration: time.Second}); err != nil {
			t.Fatal(err)
		}

		want := map[string]map[string]any{
			// A finished record has no u: it changed last when it finished.
			"ok":   {"s": "succeeded", "c": "imported", "h": 200.0, "a": 1.0, "ci": "01HZX", "v": "1.2.0 </b>", "d": 20513.0, "f": float64(now)},
			"bad":  {"s": "failed", "c": "not_found", "h": 404.0, "e": `version "9" not found / gone`, "f": float64(now)},
			"wait": {"s": "pending", "c": "server_error", "h": 503.0, "a": 1.0, "d": 1e6, "u": float64(now)},
		}
		raw, err := rdb.HGetAll(ctx, base+"orgs").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) != len(want) {
			t.Fatalf("orgs hash holds %v", raw)
		}
		for org, w := range want {
			var got map[string]any
			if err := json.Unmarshal([]byte(raw[org]), &got); err != nil {
				t.Fatalf("record of %s is not JSON: %q", org, raw[org])
			}
			if !maps.Equal(got, w) {
				t.Errorf("record of %s = %s\nwant %v", org, raw[org], w)
			}
			if exponent.MatchString(raw[org]) {
				t.Errorf("record of %s holds a number in exponent form: %s", org, raw[org])
			}
		}

		def, _ := rdb.HGetAll(ctx, base+"def").Result()
		wantDef := map[string]string{"id": "r1", "connector_id": "c1", "version": "1.0.0", "created_at_ms": "1700000000000"}
		if !maps.Equal(def, wantDef) {
			t.Errorf("def = %v; want %v", def, wantDef)
		}
		cnt, _ := rdb.HGetAll(ctx, base+"counts").Result()
		nonzero := map[string]string{}
		for k, v := range cnt {
			if v != "0" {
				nonzero[k] = v
			}
		}
		wantCnt := map[string]string{"total": "3", "pending": "1", "retrying": "1", "retry:server_error": "1",
			"succeeded": "1", "failed": "1", "class:imported": "1", "class:not_found": "1", "version:1.2.0 </b>": "1",
			"first_finish_ms": "1700000001500", "last_finish_ms": "1700000001500"}
		if !maps.Equal(nonzero, wantCnt) {
			t.Errorf("counts = %v; want %v", nonzero, wantCnt)
		}
		z, _ := rdb.ZRangeWithScores(ctx, prefix+":rollouts", 0, -1).Result()
		if len(z) != 1 || z[0].Member != "r1" || z[0].Score != 1_700_000_000_000 {
			t.Errorf("index = %v; want r1 scored 1700000000000", z)
		}
		keys, _ := rdb.Keys(ctx, prefix+"*").Result()
		slices.Sort(keys)
		wantKeys := []string{base + "counts", base + "def", base + "orgs", prefix + ":rollouts"}
		if !slices.Equal(keys, wantKeys) {
			t.Errorf("keys = %v; want %v", keys, wantKeys)
		}
	})
}
