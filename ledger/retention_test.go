package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/versori"
)

func finishAll(t *testing.T, l *ledger.Ledger, id string, orgs []string) {
	t.Helper()
	for _, o := range orgs {
		if _, err := l.Finish(context.Background(), id, versori.OrgID(o), ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRetain: the same expiry on every key of a finished rollout (extra
// keys included), none on an active one's; an expired rollout's keys are
// all gone at once.
func TestRetain(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		orgs := orgIDs(3)
		l, _ := newLedger(t, rdb, prefix, orgs...)
		extra := l.KeyPrefix("r1") + "callback"
		rdb.Set(ctx, extra, "https://x", 0)
		// The backlog is empty: a list exists only while it holds something.
		all := append(l.Keys("r1")[:3], extra)

		res, err := l.Retain(ctx, "r1", time.Hour, false, extra)
		if err != nil || res != ledger.RetainActive || res.Done() {
			t.Fatalf("Retain on an active rollout = %v, %v", res, err)
		}
		for _, k := range all {
			if d := rdb.PTTL(ctx, k).Val(); d != -1 {
				t.Errorf("active: %s has TTL %v", k, d)
			}
		}
		if _, ok, err := l.Expiry(ctx, "r1"); ok || err != nil {
			t.Errorf("Expiry of an active rollout = %v, %v", ok, err)
		}

		finishAll(t, l, "r1", orgs)
		if res, err = l.Retain(ctx, "r1", time.Hour, false, extra); err != nil || res != ledger.RetainSet {
			t.Fatalf("Retain on a finished rollout = %v, %v", res, err)
		}
		for _, k := range all {
			if d := rdb.PTTL(ctx, k).Val(); d <= 59*time.Minute || d > time.Hour {
				t.Errorf("finished: %s has TTL %v, want about 1h", k, d)
			}
		}
		if d, ok, err := l.Expiry(ctx, "r1"); !ok || err != nil || d <= 59*time.Minute {
			t.Errorf("Expiry = %v, %v, %v", d, ok, err)
		}
		// onlyUnset keeps an expiry that is set.
		if res, err = l.Retain(ctx, "r1", 2*time.Hour, true, extra); err != nil || res != ledger.RetainKept {
			t.Fatalf("Retain onlyUnset = %v, %v", res, err)
		}
		if d, _, _ := l.Expiry(ctx, "r1"); d > time.Hour {
			t.Errorf("onlyUnset changed the expiry to %v", d)
		}

		// Persist before a re-drive removes every expiry.
		if err := l.Persist(ctx, "r1", extra); err != nil {
			t.Fatal(err)
		}
		for _, k := range all {
			if d := rdb.PTTL(ctx, k).Val(); d != -1 {
				t.Errorf("persisted: %s has TTL %v", k, d)
			}
		}
		// A rollout that is not there: nothing written.
		if err := l.Persist(ctx, "nope", l.KeyPrefix("nope")+"callback"); !errors.Is(err, ledger.ErrRolloutNotFound) {
			t.Errorf("Persist of an unknown rollout: %v", err)
		}
		if _, err := l.Retain(ctx, "nope", time.Hour, false); !errors.Is(err, ledger.ErrRolloutNotFound) {
			t.Errorf("Retain of an unknown rollout: %v", err)
		}
		if _, _, err := l.Expiry(ctx, "nope"); !errors.Is(err, ledger.ErrRolloutNotFound) {
			t.Errorf("Expiry of an unknown rollout: %v", err)
		}
		if _, err := l.Retain(ctx, "r1", 0, false); err == nil {
			t.Error("Retain with ttl 0 accepted")
		}
	})
}

// TestRetentionExpires: on miniredis's clock, a finished rollout's keys
// disappear after the retention and the list neither shows nor errors on
// it; an active one stays.
func TestRetentionExpires(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	clk := newClock()
	l := ledger.New(rdb, ledger.Options{Prefix: "p", Clock: clk.Now})
	for _, id := range []string{"done", "active"} {
		if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: id, ConnectorID: "c", Version: "v"}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.AddOrgs(ctx, id, oids(orgIDs(2)...)); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	finishAll(t, l, "done", orgIDs(2))
	finishAll(t, l, "active", orgIDs(1))
	for _, id := range []string{"done", "active"} {
		if _, err := l.Retain(ctx, id, 2*time.Second, false); err != nil {
			t.Fatal(err)
		}
	}
	mr.FastForward(1500 * time.Millisecond)
	if rs, err := l.Rollouts(ctx, 0); err != nil || len(rs) != 2 {
		t.Fatalf("before the retention: %v, %v", rs, err)
	}
	mr.FastForward(time.Second)
	for _, k := range l.Keys("done") {
		if mr.Exists(k) {
			t.Errorf("%s still exists after the retention", k)
		}
	}
	for _, k := range l.Keys("active") {
		if strings.HasSuffix(k, ":backlog") {
			continue // empty, so absent
		}
		if !mr.Exists(k) {
			t.Errorf("%s of the active rollout expired", k)
		}
	}
	if _, _, err := l.Rollout(ctx, "done"); !errors.Is(err, ledger.ErrRolloutNotFound) {
		t.Errorf("Rollout after expiry: %v", err)
	}
	rs, err := l.Rollouts(ctx, 0)
	if err != nil || len(rs) != 1 || rs[0].ID != "active" {
		t.Fatalf("Rollouts(0) after expiry = %+v, %v; want active", rs, err)
	}
	// The listing pruned the index.
	if n, _ := l.RolloutCount(ctx); n != 1 {
		t.Errorf("index holds %d rollouts after the listing, want 1", n)
	}
	// Created = held + removed: the metrics' counters never go down.
	if n, err := l.RemovedCount(ctx); err != nil || n != 1 {
		t.Errorf("RemovedCount = %d, %v; want 1", n, err)
	}
	if _, err := l.Delete(ctx, "active"); err != nil {
		t.Fatal(err)
	}
	if n, _ := l.RemovedCount(ctx); n != 2 {
		t.Errorf("RemovedCount after Delete = %d, want 2", n)
	}
}

// TestRolloutsFillsUpPastExpired: a page of expired rollouts does not
// shorten the list: it is filled up from older ones.
func TestRolloutsFillsUpPastExpired(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		clk := newClock()
		l := ledger.New(rdb, ledger.Options{Prefix: prefix, Clock: clk.Now})
		for i := range 10 {
			id := fmt.Sprintf("r%02d", i)
			if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: id, ConnectorID: "c", Version: "v"}); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Second)
		}
		// The five newest are gone (as if expired).
		for i := 5; i < 10; i++ {
			rdb.Unlink(ctx, l.Keys(fmt.Sprintf("r%02d", i))...)
		}
		rs, err := l.Rollouts(ctx, 3)
		if err != nil || len(rs) != 3 || rs[0].ID != "r04" || rs[2].ID != "r02" {
			t.Fatalf("Rollouts(3) = %+v, %v; want r04, r03, r02", rs, err)
		}
		if n, _ := l.RolloutCount(ctx); n != 5 {
			t.Errorf("index holds %d, want 5", n)
		}
	})
}

// TestPruneIndex: members created before the cutoff whose definition is
// gone are removed; live ones are handed to live; newer ones are not read.
func TestPruneIndex(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		clk := newClock()
		l := ledger.New(rdb, ledger.Options{Prefix: prefix, Clock: clk.Now})
		for _, id := range []string{"old-gone", "old-live", "new-gone"} {
			if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: id, ConnectorID: "c", Version: "v"}); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Hour)
		}
		rdb.Unlink(ctx, l.Keys("old-gone")...)
		rdb.Unlink(ctx, l.Keys("new-gone")...)
		var live []string
		n, err := l.PruneIndex(ctx, newClock().Now().Add(90*time.Minute), func(ids []string) error {
			live = append(live, ids...)
			return nil
		})
		if err != nil || n != 1 || fmt.Sprint(live) != "[old-live]" {
			t.Fatalf("PruneIndex = %d, %v, live %v; want 1, [old-live]", n, err, live)
		}
		ids := rdb.ZRange(ctx, prefix+":rollouts", 0, -1).Val()
		if fmt.Sprint(ids) != "[old-live new-gone]" {
			t.Errorf("index = %v", ids)
		}
	})
}

// TestCreateAfterExpiry: a rollout created again under the ID of an expired
// one whose index entry was not pruned yet is listed with its new time.
func TestCreateAfterExpiry(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	clk := newClock()
	l := ledger.New(rdb, ledger.Options{Prefix: "p", Clock: clk.Now})
	l.CreateRollout(ctx, ledger.Rollout{ID: "r", ConnectorID: "c", Version: "v"})
	if _, err := l.Retain(ctx, "r", time.Second, false); err != nil {
		t.Fatal(err)
	}
	mr.FastForward(2 * time.Second)
	clk.Advance(time.Hour)
	if created, err := l.CreateRollout(ctx, ledger.Rollout{ID: "r", ConnectorID: "c", Version: "v"}); err != nil || !created {
		t.Fatalf("CreateRollout after expiry = %v, %v", created, err)
	}
	rs, err := l.Rollouts(ctx, 0)
	if err != nil || len(rs) != 1 || !rs[0].CreatedAt.Equal(clk.Now()) {
		t.Fatalf("Rollouts = %+v, %v", rs, err)
	}
	if s := rdb.ZScore(ctx, "p:rollouts", "r").Val(); int64(s) != clk.Now().UnixMilli() {
		t.Errorf("index score %v, want %d", s, clk.Now().UnixMilli())
	}
}
