package ledger_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
)

// clock is a settable clock for Options.Clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.UnixMilli(1_700_000_000_000)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type backend struct {
	name string
	rdb  redis.UniversalClient
}

// backends returns miniredis, and a real redis-server when one can be
// started, so that every behaviour is checked against both Lua engines
// (gopher-lua with its cjson stand-in, and Redis's own).
func backends(t *testing.T) []backend {
	t.Helper()
	mr := miniredis.RunT(t)
	mc := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { mc.Close() })
	bs := []backend{{"miniredis", mc}}
	if testing.Short() {
		return bs
	}
	s := redistest.Start(t, redistest.Options{})
	return append(bs, backend{"redis", s.Client()})
}

// forEach runs fn once per backend, each with its own key prefix.
func forEach(t *testing.T, fn func(t *testing.T, rdb redis.UniversalClient, prefix string)) {
	t.Helper()
	bs := backends(t)
	for _, b := range bs {
		t.Run(b.name, func(t *testing.T) {
			prefix := "test:" + strings.ReplaceAll(t.Name(), "/", ":")
			fn(t, b.rdb, prefix)
		})
	}
}

// newLedger makes a ledger with a fake clock and a rollout "r1" holding the
// given organisations.
func newLedger(t *testing.T, rdb redis.UniversalClient, prefix string, orgs ...string) (*ledger.Ledger, *clock) {
	t.Helper()
	clk := newClock()
	l := ledger.New(rdb, ledger.Options{Prefix: prefix, Clock: clk.Now})
	ctx := context.Background()
	if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: "r1", ConnectorID: "c1", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	if len(orgs) > 0 {
		if _, err := l.AddOrgs(ctx, "r1", orgs); err != nil {
			t.Fatal(err)
		}
	}
	return l, clk
}

func orgIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("org%06d", i)
	}
	return ids
}

func counts(t *testing.T, l *ledger.Ledger, id string) ledger.Counts {
	t.Helper()
	_, c, err := l.Rollout(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkCounts fails unless the stored counters equal want and a recount
// from the records.
func checkCounts(t *testing.T, l *ledger.Ledger, id string, want ledger.Counts) {
	t.Helper()
	got := counts(t, l, id)
	if !equalCounts(got, want) {
		t.Errorf("counts = %s\nwant     %s", fmtCounts(got), fmtCounts(want))
	}
	re, err := l.Recount(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !equalCounts(got, re) {
		t.Errorf("counters %s\ndisagree with records %s", fmtCounts(got), fmtCounts(re))
	}
}

func equalCounts(a, b ledger.Counts) bool {
	return fmtCounts(a) == fmtCounts(b)
}

// fmtCounts prints counts with empty maps and nil maps alike (fmt sorts
// map keys).
func fmtCounts(c ledger.Counts) string {
	norm := func(m map[string]int64) map[string]int64 {
		out := map[string]int64{}
		for k, v := range m {
			if v != 0 {
				out[k] = v
			}
		}
		return out
	}
	return fmt.Sprintf("total=%d pending=%d retrying=%d succeeded=%d failed=%d cancelled=%d class=%v retry=%v version=%v",
		c.Total, c.Pending, c.Retrying, c.Succeeded, c.Failed, c.Cancelled,
		norm(c.ByClass), norm(c.RetryingByClass), norm(c.ByVersion))
}
