package ledger_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/versori"
)

func TestCreateRollout(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		clk := newClock()
		l := ledger.New(rdb, ledger.Options{Prefix: prefix, Clock: clk.Now})
		def := ledger.Rollout{ID: "r1", ConnectorID: "c1", Version: "latest", Total: 99}

		created, err := l.CreateRollout(ctx, def)
		if err != nil || !created {
			t.Fatalf("first CreateRollout = %v, %v; want true, nil", created, err)
		}
		clk.Advance(time.Hour)
		created, err = l.CreateRollout(ctx, def)
		if err != nil || created {
			t.Fatalf("repeated CreateRollout = %v, %v; want false, nil", created, err)
		}
		for _, other := range []ledger.Rollout{
			{ID: "r1", ConnectorID: "c2", Version: "latest"},
			{ID: "r1", ConnectorID: "c1", Version: "1.0.0"},
		} {
			created, err := l.CreateRollout(ctx, other)
			if !errors.Is(err, ledger.ErrRolloutMismatch) || created {
				t.Errorf("CreateRollout(%+v) = %v, %v; want false, ErrRolloutMismatch", other, created, err)
			}
		}

		r, c, err := l.Rollout(ctx, "r1")
		if err != nil {
			t.Fatal(err)
		}
		want := ledger.Rollout{ID: "r1", ConnectorID: "c1", Version: "latest", CreatedAt: newClock().Now()}
		if !r.CreatedAt.Equal(want.CreatedAt) || r.ID != want.ID || r.ConnectorID != want.ConnectorID || r.Version != want.Version || r.Total != 0 {
			t.Errorf("Rollout = %+v; want %+v (first creation time kept, Total ignored)", r, want)
		}
		if !c.Done() || c.Total != 0 {
			t.Errorf("empty rollout counts = %+v; want done and zero", c)
		}

		explicit := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
		if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: "r2", ConnectorID: "c", Version: "v", CreatedAt: explicit}); err != nil {
			t.Fatal(err)
		}
		if r, _, _ := l.Rollout(ctx, "r2"); !r.CreatedAt.Equal(explicit) {
			t.Errorf("CreatedAt = %v; want %v", r.CreatedAt, explicit)
		}
	})
}

func TestCreateRolloutInvalid(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		l := ledger.New(rdb, ledger.Options{Prefix: prefix})
		for _, r := range []ledger.Rollout{
			{ID: "", ConnectorID: "c", Version: "v"},
			{ID: "a{b}", ConnectorID: "c", Version: "v"},
			{ID: "a b", ConnectorID: "c", Version: "v"},
			{ID: "a\nb", ConnectorID: "c", Version: "v"},
			{ID: "\xff", ConnectorID: "c", Version: "v"},
			{ID: strings.Repeat("x", 201), ConnectorID: "c", Version: "v"},
			{ID: "ok", ConnectorID: "", Version: "v"},
			{ID: "ok", ConnectorID: "c", Version: ""},
		} {
			if _, err := l.CreateRollout(context.Background(), r); !errors.Is(err, ledger.ErrInvalidID) {
				t.Errorf("CreateRollout(%q, %q, %q) error = %v; want ErrInvalidID", r.ID, r.ConnectorID, r.Version, err)
			}
		}
		if n, _ := rdb.Keys(context.Background(), prefix+"*").Result(); len(n) != 0 {
			t.Errorf("invalid rollouts wrote keys %v", n)
		}
	})
}

func TestAddOrgs(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		clk := newClock()
		l := ledger.New(rdb, ledger.Options{Prefix: prefix, Clock: clk.Now, BatchSize: 3, Parallelism: 2})
		if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: "r1", ConnectorID: "c", Version: "v"}); err != nil {
			t.Fatal(err)
		}
		added, err := l.AddOrgs(ctx, "r1", []versori.OrgID{"a", "b", "c", "a", "d", "e", "b", "f"})
		if err != nil || added != 6 {
			t.Fatalf("AddOrgs = %d, %v; want 6 new (duplicates dropped)", added, err)
		}
		added, err = l.AddOrgs(ctx, "r1", []versori.OrgID{"f", "g", "a"})
		if err != nil || added != 1 {
			t.Fatalf("second AddOrgs = %d, %v; want 1", added, err)
		}
		checkCounts(t, l, "r1", ledger.Counts{Total: 7, Pending: 7})

		// Adding an organisation that already finished leaves it alone.
		if _, err := l.Finish(ctx, "r1", "a", ledger.Outcome{State: ledger.Succeeded, Class: "imported"}); err != nil {
			t.Fatal(err)
		}
		if added, err := l.AddOrgs(ctx, "r1", []versori.OrgID{"a"}); err != nil || added != 0 {
			t.Fatalf("AddOrgs of a finished org = %d, %v; want 0", added, err)
		}
		rec, err := l.Org(ctx, "r1", "a")
		if err != nil || rec.State != ledger.Succeeded {
			t.Fatalf("Org(a) = %+v, %v; want succeeded", rec, err)
		}
		rec, err = l.Org(ctx, "r1", "g")
		want := ledger.Record{OrgID: "g", State: ledger.Pending, UpdatedAt: clk.Now()}
		if err != nil || rec != want {
			t.Errorf("Org(g) = %+v, %v; want %+v", rec, err, want)
		}
		checkCounts(t, l, "r1", ledger.Counts{Total: 7, Pending: 6, Succeeded: 1, ByClass: map[string]int64{"imported": 1}})

		if added, err := l.AddOrgs(ctx, "r1", nil); err != nil || added != 0 {
			t.Errorf("AddOrgs(nil) = %d, %v; want 0, nil", added, err)
		}
	})
}

func TestAddOrgsErrors(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l, _ := newLedger(t, rdb, prefix)
		if _, err := l.AddOrgs(ctx, "nope", []versori.OrgID{"a"}); !errors.Is(err, ledger.ErrRolloutNotFound) {
			t.Errorf("AddOrgs to a missing rollout: %v; want ErrRolloutNotFound", err)
		}
		if _, err := l.AddOrgs(ctx, "nope", nil); !errors.Is(err, ledger.ErrRolloutNotFound) {
			t.Errorf("AddOrgs(nil) to a missing rollout: %v; want ErrRolloutNotFound", err)
		}
		// Organisation IDs come parsed (versori.ParseOrgID): the ledger
		// refuses only the zero one, a field left unset.
		for _, bad := range []string{""} {
			added, err := l.AddOrgs(ctx, "r1", []versori.OrgID{"good1", versori.OrgID(bad), "good2"})
			if !errors.Is(err, ledger.ErrInvalidID) || added != 0 {
				t.Errorf("AddOrgs with %q = %d, %v; want 0, ErrInvalidID", bad, added, err)
			}
		}
		checkCounts(t, l, "r1", ledger.Counts{})
		if n, err := rdb.Exists(ctx, prefix+":rollout:{nope}:orgs", prefix+":rollout:{nope}:counts").Result(); err != nil || n != 0 {
			t.Errorf("AddOrgs to a missing rollout created %d keys (%v)", n, err)
		}

		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := l.AddOrgs(cctx, "r1", oids(orgIDs(10)...)); !errors.Is(err, context.Canceled) {
			t.Errorf("AddOrgs with a cancelled context: %v; want context.Canceled", err)
		}
	})
}

// state puts organisation org of rollout r1 in a named starting state.
func state(t *testing.T, l *ledger.Ledger, org, name string) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch name {
	case "pending":
	case "retrying":
		err = l.Attempt(ctx, "r1", versori.OrgID(org), ledger.Attempt{Class: "server_error", HTTPStatus: 503, Error: "busy"})
	case "succeeded":
		_, err = l.Finish(ctx, "r1", versori.OrgID(org), ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, Version: "1.0.0", CountAttempt: true})
	case "failed":
		_, err = l.Finish(ctx, "r1", versori.OrgID(org), ledger.Outcome{State: ledger.Failed, Class: "not_found", HTTPStatus: 404, Error: "no such version", CountAttempt: true})
	case "cancelled":
		_, err = l.Cancel(ctx, "r1", []versori.OrgID{versori.OrgID(org)})
	default:
		t.Fatalf("unknown state %q", name)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestFinishTransitions(t *testing.T) {
	succeed := ledger.Outcome{State: ledger.Succeeded, Class: "already_present", HTTPStatus: 409, ConnectorID: "c1", Version: "1.1.0", Duration: 1500 * time.Microsecond, CountAttempt: true}
	fail := ledger.Outcome{State: ledger.Failed, Class: "exhausted", HTTPStatus: 503, Error: "gave up", Duration: time.Second, CountAttempt: true}
	tests := []struct {
		from     string
		outcome  ledger.Outcome
		changed  bool
		want     ledger.State
		attempts int
		counts   ledger.Counts
	}{
		{"pending", succeed, true, ledger.Succeeded, 1, ledger.Counts{Total: 1, Succeeded: 1, ByClass: map[string]int64{"already_present": 1}, ByVersion: map[string]int64{"1.1.0": 1}}},
		{"pending", fail, true, ledger.Failed, 1, ledger.Counts{Total: 1, Failed: 1, ByClass: map[string]int64{"exhausted": 1}}},
		{"retrying", succeed, true, ledger.Succeeded, 2, ledger.Counts{Total: 1, Succeeded: 1, ByClass: map[string]int64{"already_present": 1}, ByVersion: map[string]int64{"1.1.0": 1}}},
		{"retrying", fail, true, ledger.Failed, 2, ledger.Counts{Total: 1, Failed: 1, ByClass: map[string]int64{"exhausted": 1}}},
		{"succeeded", succeed, false, ledger.Succeeded, 1, ledger.Counts{Total: 1, Succeeded: 1, ByClass: map[string]int64{"imported": 1}, ByVersion: map[string]int64{"1.0.0": 1}}},
		{"succeeded", fail, false, ledger.Succeeded, 1, ledger.Counts{Total: 1, Succeeded: 1, ByClass: map[string]int64{"imported": 1}, ByVersion: map[string]int64{"1.0.0": 1}}},
		{"failed", succeed, true, ledger.Succeeded, 2, ledger.Counts{Total: 1, Succeeded: 1, ByClass: map[string]int64{"already_present": 1}, ByVersion: map[string]int64{"1.1.0": 1}}},
		{"failed", fail, false, ledger.Failed, 1, ledger.Counts{Total: 1, Failed: 1, ByClass: map[string]int64{"not_found": 1}}},
		{"cancelled", succeed, true, ledger.Succeeded, 1, ledger.Counts{Total: 1, Succeeded: 1, ByClass: map[string]int64{"already_present": 1}, ByVersion: map[string]int64{"1.1.0": 1}}},
		{"cancelled", fail, false, ledger.Cancelled, 0, ledger.Counts{Total: 1, Cancelled: 1}},
	}
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		for _, tt := range tests {
			t.Run(tt.from+"_to_"+string(tt.outcome.State), func(t *testing.T) {
				ctx := context.Background()
				l, clk := newLedger(t, rdb, prefix+":"+tt.from+":"+string(tt.outcome.State), "o")
				state(t, l, "o", tt.from)
				before, err := l.Org(ctx, "r1", "o")
				if err != nil {
					t.Fatal(err)
				}
				clk.Advance(time.Minute)
				f, err := l.Finish(ctx, "r1", "o", tt.outcome)
				changed := f.Changed
				if err != nil || changed != tt.changed {
					t.Fatalf("Finish = %v, %v; want %v, nil", changed, err, tt.changed)
				}
				rec, err := l.Org(ctx, "r1", "o")
				if err != nil {
					t.Fatal(err)
				}
				if rec.State != tt.want || rec.Attempts != tt.attempts {
					t.Errorf("record = %+v; want state %s, %d attempts", rec, tt.want, tt.attempts)
				}
				if !changed {
					if rec != before {
						t.Errorf("unchanged record was rewritten:\n got %+v\nwant %+v", rec, before)
					}
				} else {
					o := tt.outcome
					want := ledger.Record{OrgID: "o", State: o.State, Class: o.Class, HTTPStatus: o.HTTPStatus, Attempts: tt.attempts,
						Error: o.Error, ConnectorID: o.ConnectorID, Version: o.Version, Duration: o.Duration,
						FinishedAt: clk.Now(), UpdatedAt: clk.Now()}
					if rec != want {
						t.Errorf("record =\n %+v\nwant\n %+v", rec, want)
					}
				}
				checkCounts(t, l, "r1", tt.counts)
				if !counts(t, l, "r1").Done() {
					t.Error("Done() = false with nothing pending")
				}
			})
		}
	})
}

func TestFinishInvalid(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l, _ := newLedger(t, rdb, prefix, "o")
		for _, o := range []ledger.Outcome{
			{State: ledger.Pending},
			{State: ledger.Cancelled},
			{State: "done"},
			{State: ledger.Failed, Class: strings.Repeat("c", 65)},
		} {
			if _, err := l.Finish(ctx, "r1", "o", o); err == nil {
				t.Errorf("Finish(%+v) succeeded; want an error", o)
			}
		}
		if err := l.Attempt(ctx, "r1", "o", ledger.Attempt{Class: strings.Repeat("c", 65)}); !errors.Is(err, ledger.ErrInvalidClass) {
			t.Errorf("Attempt with a long class: %v; want ErrInvalidClass", err)
		}
		checkCounts(t, l, "r1", ledger.Counts{Total: 1, Pending: 1})
	})
}

func TestAttempt(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l, clk := newLedger(t, rdb, prefix, "a", "b", "c")
		clk.Advance(time.Second)
		for i, a := range []ledger.Attempt{
			{Class: "server_error", HTTPStatus: 503, Error: "unavailable", Duration: 20 * time.Millisecond},
			{Class: "rate_limited", HTTPStatus: 429, Error: "slow down", Duration: 3 * time.Millisecond},
		} {
			if err := l.Attempt(ctx, "r1", "a", a); err != nil {
				t.Fatal(err)
			}
			rec, err := l.Org(ctx, "r1", "a")
			want := ledger.Record{OrgID: "a", State: ledger.Pending, Class: a.Class, HTTPStatus: a.HTTPStatus, Attempts: i + 1,
				Error: a.Error, Duration: a.Duration, UpdatedAt: clk.Now()}
			if err != nil || rec != want || !rec.Retrying() {
				t.Errorf("after attempt %d: %+v, %v; want %+v, retrying", i+1, rec, err, want)
			}
		}
		if err := l.Attempt(ctx, "r1", "b", ledger.Attempt{Class: "timeout"}); err != nil {
			t.Fatal(err)
		}
		c := counts(t, l, "r1")
		checkCounts(t, l, "r1", ledger.Counts{Total: 3, Pending: 3, Retrying: 2, RetryingByClass: map[string]int64{"rate_limited": 1, "timeout": 1}})
		if c.Done() {
			t.Error("Done() with retrying records")
		}

		// Attempts on records that are no longer pending change nothing.
		state(t, l, "b", "succeeded")
		state(t, l, "c", "cancelled")
		for _, org := range []string{"b", "c"} {
			before, _ := l.Org(ctx, "r1", versori.OrgID(org))
			if err := l.Attempt(ctx, "r1", versori.OrgID(org), ledger.Attempt{Class: "server_error"}); err != nil {
				t.Fatal(err)
			}
			if after, _ := l.Org(ctx, "r1", versori.OrgID(org)); after != before {
				t.Errorf("Attempt changed a %s record: %+v -> %+v", before.State, before, after)
			}
		}
		checkCounts(t, l, "r1", ledger.Counts{Total: 3, Pending: 1, Retrying: 1, Succeeded: 1, Cancelled: 1,
			RetryingByClass: map[string]int64{"rate_limited": 1}, ByClass: map[string]int64{"imported": 1}, ByVersion: map[string]int64{"1.0.0": 1}})
	})
}

func TestDoubleDelivery(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l, _ := newLedger(t, rdb, prefix, orgIDs(4)...)
		ok := ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, Version: "2", CountAttempt: true}
		bad := ledger.Outcome{State: ledger.Failed, Class: "forbidden", HTTPStatus: 403, Error: "no", CountAttempt: true}
		for round := range 3 {
			for i, org := range orgIDs(4) {
				o := ok
				if i%2 == 1 {
					o = bad
				}
				f, err := l.Finish(ctx, "r1", versori.OrgID(org), o)
				if err != nil || f.Changed != (round == 0) {
					t.Fatalf("round %d Finish(%s) = %v, %v; want %v", round, org, f.Changed, err, round == 0)
				}
			}
			checkCounts(t, l, "r1", ledger.Counts{Total: 4, Succeeded: 2, Failed: 2,
				ByClass: map[string]int64{"imported": 2, "forbidden": 2}, ByVersion: map[string]int64{"2": 2}})
		}
	})
}

func TestRequeueAndCancel(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l, clk := newLedger(t, rdb, prefix, "p", "r", "s", "f", "x")
		state(t, l, "r", "retrying")
		state(t, l, "s", "succeeded")
		state(t, l, "f", "failed")
		state(t, l, "x", "cancelled")
		failedBefore, _ := l.Org(ctx, "r1", "f")
		clk.Advance(time.Minute)

		all := []string{"p", "r", "s", "f", "x", "unknown"}
		n, err := l.Requeue(ctx, "r1", oids(all...))
		if err != nil || n != 1 {
			t.Fatalf("Requeue = %d, %v; want 1 (only the failed one)", n, err)
		}
		rec, _ := l.Org(ctx, "r1", "f")
		want := failedBefore
		want.State, want.FinishedAt, want.UpdatedAt = ledger.Pending, time.Time{}, clk.Now()
		if rec != want || !rec.Retrying() {
			t.Errorf("requeued record = %+v; want %+v (attempts and last error kept, retrying)", rec, want)
		}
		checkCounts(t, l, "r1", ledger.Counts{Total: 5, Pending: 3, Retrying: 2, Succeeded: 1, Cancelled: 1,
			RetryingByClass: map[string]int64{"server_error": 1, "not_found": 1},
			ByClass:         map[string]int64{"imported": 1}, ByVersion: map[string]int64{"1.0.0": 1}})
		if n, _ := l.Requeue(ctx, "r1", oids(all...)); n != 0 {
			t.Errorf("second Requeue moved %d; want 0", n)
		}

		clk.Advance(time.Minute)
		n, err = l.Cancel(ctx, "r1", oids(all...))
		if err != nil || n != 3 {
			t.Fatalf("Cancel = %d, %v; want 3 (the pending ones)", n, err)
		}
		rec, _ = l.Org(ctx, "r1", "r")
		if rec.State != ledger.Cancelled || !rec.FinishedAt.Equal(clk.Now()) || rec.Class != "server_error" || rec.Attempts != 1 {
			t.Errorf("cancelled record = %+v", rec)
		}
		if rec, _ := l.Org(ctx, "r1", "s"); rec.State != ledger.Succeeded {
			t.Errorf("Cancel touched a succeeded record: %+v", rec)
		}
		checkCounts(t, l, "r1", ledger.Counts{Total: 5, Succeeded: 1, Cancelled: 4,
			ByClass: map[string]int64{"imported": 1}, ByVersion: map[string]int64{"1.0.0": 1}})
		if n, _ := l.Cancel(ctx, "r1", oids(all...)); n != 0 {
			t.Errorf("second Cancel moved %d; want 0", n)
		}
		if n, _ := l.Requeue(ctx, "r1", oids(all...)); n != 0 {
			t.Errorf("Requeue moved %d cancelled records; want 0", n)
		}
	})
}

func TestRequeueCancelBatches(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l := ledger.New(rdb, ledger.Options{Prefix: prefix, BatchSize: 7})
		ids := orgIDs(50)
		if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: "r1", ConnectorID: "c", Version: "v"}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.AddOrgs(ctx, "r1", oids(ids...)); err != nil {
			t.Fatal(err)
		}
		if n, err := l.Cancel(ctx, "r1", oids(ids...)); err != nil || n != 50 {
			t.Fatalf("Cancel = %d, %v; want 50", n, err)
		}
		checkCounts(t, l, "r1", ledger.Counts{Total: 50, Cancelled: 50})
	})
}

func TestNotFound(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l, _ := newLedger(t, rdb, prefix, "o")
		noop := func(ledger.Record) error { return nil }
		for _, tt := range []struct {
			rollout, org string
			want         error
		}{
			{"missing", "o", ledger.ErrRolloutNotFound},
			{"r1", "missing", ledger.ErrOrgNotFound},
		} {
			calls := map[string]error{}
			_, calls["Org"] = l.Org(ctx, tt.rollout, versori.OrgID(tt.org))
			_, calls["Succeeded"] = l.Succeeded(ctx, tt.rollout, versori.OrgID(tt.org))
			calls["Attempt"] = l.Attempt(ctx, tt.rollout, versori.OrgID(tt.org), ledger.Attempt{Class: "timeout"})
			_, calls["Finish"] = l.Finish(ctx, tt.rollout, versori.OrgID(tt.org), ledger.Outcome{State: ledger.Succeeded})
			for name, err := range calls {
				if !errors.Is(err, tt.want) {
					t.Errorf("%s(%q, %q) error = %v; want %v", name, tt.rollout, tt.org, err, tt.want)
				}
			}
		}
		calls := map[string]error{}
		_, _, calls["Rollout"] = l.Rollout(ctx, "missing")
		_, calls["Requeue"] = l.Requeue(ctx, "missing", []versori.OrgID{"o"})
		_, calls["Cancel"] = l.Cancel(ctx, "missing", []versori.OrgID{"o"})
		_, calls["Cancel(nil)"] = l.Cancel(ctx, "missing", nil)
		calls["Scan"] = l.Scan(ctx, "missing", noop)
		calls["Failed"] = l.Failed(ctx, "missing", nil, noop)
		_, calls["Recount"] = l.Recount(ctx, "missing")
		for name, err := range calls {
			if !errors.Is(err, ledger.ErrRolloutNotFound) {
				t.Errorf("%s on a missing rollout: %v; want ErrRolloutNotFound", name, err)
			}
		}
		if n, _ := rdb.Keys(ctx, prefix+":rollout:{missing}*").Result(); len(n) != 0 {
			t.Errorf("calls on a missing rollout created %v", n)
		}
		checkCounts(t, l, "r1", ledger.Counts{Total: 1, Pending: 1})
	})
}

func TestSucceeded(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l, _ := newLedger(t, rdb, prefix, "p", "s", "f")
		state(t, l, "s", "succeeded")
		state(t, l, "f", "failed")
		for org, want := range map[string]bool{"p": false, "s": true, "f": false} {
			if got, err := l.Succeeded(ctx, "r1", versori.OrgID(org)); err != nil || got != want {
				t.Errorf("Succeeded(%s) = %v, %v; want %v", org, got, err, want)
			}
		}
	})
}

func TestErrorMessagesAreTrimmed(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		clk := newClock()
		l := ledger.New(rdb, ledger.Options{Prefix: prefix, Clock: clk.Now, MaxErrorLen: 40})
		if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: "r1", ConnectorID: "c", Version: "v"}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.AddOrgs(ctx, "r1", []versori.OrgID{"a", "b"}); err != nil {
			t.Fatal(err)
		}
		long := "bad \xff\xfe gateway:\r\n\t<html>" + strings.Repeat("é", 100) + "\x00\x1b[31m"
		if err := l.Attempt(ctx, "r1", "a", ledger.Attempt{Class: "server_error", Error: long}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Finish(ctx, "r1", "b", ledger.Outcome{State: ledger.Failed, Class: "invalid", Error: long,
			ConnectorID: "c\x00" + strings.Repeat("x", 1000), Version: "v\n1"}); err != nil {
			t.Fatal(err)
		}
		// Consecutive invalid bytes become one U+FFFD; the cut keeps whole runes.
		want := "bad \uFFFD gateway: <html>ééééééé…"
		for _, org := range []string{"a", "b"} {
			rec, err := l.Org(ctx, "r1", versori.OrgID(org))
			if err != nil {
				t.Fatal(err)
			}
			if rec.Error != want {
				t.Errorf("stored error of %s = %q (%d bytes); want %q", org, rec.Error, len(rec.Error), want)
			}
		}
		rec, _ := l.Org(ctx, "r1", "b")
		if rec.Version != "v 1" || len(rec.ConnectorID) > 256 || strings.ContainsRune(rec.ConnectorID, 0) {
			t.Errorf("API fields not sanitised: connector %q, version %q", rec.ConnectorID, rec.Version)
		}
	})
}

func TestRollouts(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		clk := newClock()
		l := ledger.New(rdb, ledger.Options{Prefix: prefix, Clock: clk.Now})
		if got, err := l.Rollouts(ctx, 10); err != nil || len(got) != 0 {
			t.Fatalf("Rollouts on an empty ledger = %v, %v", got, err)
		}
		for i, id := range []string{"old", "mid", "new"} {
			if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: id, ConnectorID: "c", Version: "v"}); err != nil {
				t.Fatal(err)
			}
			if _, err := l.AddOrgs(ctx, id, oids(orgIDs(i+1)...)); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Second)
		}
		got, err := l.Rollouts(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].ID != "new" || got[1].ID != "mid" || got[0].Total != 3 || got[0].Counts.Pending != 3 {
			t.Errorf("Rollouts(2) = %+v; want new (3 pending), mid", got)
		}
		if all, _ := l.Rollouts(ctx, 0); len(all) != 3 || all[2].ID != "old" {
			t.Errorf("Rollouts(0) = %+v; want all three", all)
		}

		existed, err := l.Delete(ctx, "mid")
		if err != nil || !existed {
			t.Fatalf("Delete = %v, %v", existed, err)
		}
		if existed, _ := l.Delete(ctx, "mid"); existed {
			t.Error("second Delete reported the rollout existed")
		}
		if _, _, err := l.Rollout(ctx, "mid"); !errors.Is(err, ledger.ErrRolloutNotFound) {
			t.Errorf("Rollout after Delete: %v", err)
		}
		if n, _ := rdb.Keys(ctx, prefix+":rollout:{mid}*").Result(); len(n) != 0 {
			t.Errorf("Delete left %v", n)
		}
		// An index entry whose keys are gone (a Delete cut short) is skipped.
		rdb.ZAdd(ctx, prefix+":rollouts", redis.Z{Score: 1e13, Member: "ghost"})
		got, err = l.Rollouts(ctx, 0)
		if err != nil || len(got) != 2 || got[0].ID != "new" || got[1].ID != "old" {
			t.Errorf("Rollouts after Delete = %+v, %v; want new, old", got, err)
		}
	})
}

func TestScan(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l := ledger.New(rdb, ledger.Options{Prefix: prefix, ScanCount: 10})
		ids := orgIDs(250)
		if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: "r1", ConnectorID: "c", Version: "v"}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.AddOrgs(ctx, "r1", oids(ids...)); err != nil {
			t.Fatal(err)
		}
		classes := []string{"not_found", "exhausted", "invalid"}
		for i, id := range ids[:60] {
			if _, err := l.Finish(ctx, "r1", versori.OrgID(id), ledger.Outcome{State: ledger.Failed, Class: classes[i%3]}); err != nil {
				t.Fatal(err)
			}
		}
		seen := map[string]int{}
		if err := l.Scan(ctx, "r1", func(r ledger.Record) error { seen[string(r.OrgID)]++; return nil }); err != nil {
			t.Fatal(err)
		}
		if len(seen) != len(ids) {
			t.Errorf("Scan saw %d organisations; want %d", len(seen), len(ids))
		}

		var failed []string
		err := l.Failed(ctx, "r1", []string{"exhausted", "invalid"}, func(r ledger.Record) error {
			if r.State != ledger.Failed || (r.Class != "exhausted" && r.Class != "invalid") {
				t.Errorf("Failed yielded %+v", r)
			}
			failed = append(failed, string(r.OrgID))
			return nil
		})
		if err != nil || len(failed) != 40 {
			t.Errorf("Failed(exhausted, invalid) yielded %d, %v; want 40", len(failed), err)
		}
		n := 0
		if err := l.Failed(ctx, "r1", nil, func(ledger.Record) error { n++; return nil }); err != nil || n != 60 {
			t.Errorf("Failed(any) yielded %d, %v; want 60", n, err)
		}
		n = 0
		if err := l.ScanFilter(ctx, "r1", ledger.Filter{States: []ledger.State{ledger.Pending}}, func(ledger.Record) error { n++; return nil }); err != nil || n != 190 {
			t.Errorf("ScanFilter(pending) yielded %d, %v; want 190", n, err)
		}

		n = 0
		err = l.Scan(ctx, "r1", func(ledger.Record) error {
			n++
			if n == 5 {
				return ledger.ErrStop
			}
			return nil
		})
		if err != nil || n != 5 {
			t.Errorf("Scan stopped with ErrStop: n=%d, %v; want 5, nil", n, err)
		}
		boom := errors.New("boom")
		if err := l.Scan(ctx, "r1", func(ledger.Record) error { return boom }); !errors.Is(err, boom) {
			t.Errorf("Scan returned %v; want the callback's error", err)
		}

		// Retry's path: requeue what Failed yields, in the callback.
		err = l.Failed(ctx, "r1", []string{"not_found"}, func(r ledger.Record) error {
			_, err := l.Requeue(ctx, "r1", []versori.OrgID{r.OrgID})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		checkCounts(t, l, "r1", ledger.Counts{Total: 250, Pending: 210, Failed: 40,
			ByClass: map[string]int64{"exhausted": 20, "invalid": 20}})
		if c := counts(t, l, "r1"); c.Retrying != 0 {
			t.Errorf("requeued records without attempts count as retrying: %+v", c)
		}
	})
}

func TestCorruptRecord(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l, _ := newLedger(t, rdb, prefix, "o")
		rdb.HSet(ctx, prefix+":rollout:{r1}:orgs", "o", "not json")
		if _, err := l.Org(ctx, "r1", "o"); err == nil {
			t.Error("Org decoded a corrupt record")
		}
		if err := l.Scan(ctx, "r1", func(ledger.Record) error { return nil }); err == nil {
			t.Error("Scan decoded a corrupt record")
		}
		if _, err := l.Finish(ctx, "r1", "o", ledger.Outcome{State: ledger.Succeeded}); err == nil {
			t.Error("Finish overwrote a corrupt record")
		}
	})
}

// The cluster backend only proves the key layout if it refuses what a real
// cluster refuses: keys of different slots in one script or command.
func TestClusterBackendRefusesCrossSlot(t *testing.T) {
	if cluster == nil {
		t.Skip("no cluster backend (needs redis-server, not -short)")
	}
	ctx := context.Background()
	err := cluster.Eval(ctx, "return redis.call('MGET', KEYS[1], KEYS[2])", []string{"x:{a}", "x:{b}"}).Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Errorf("cross-slot script: %v; want CROSSSLOT", err)
	}
	err = cluster.Eval(ctx, "return redis.call('GET', 'x:{b}')", []string{"x:{a}"}).Err()
	if err == nil {
		t.Error("script touching an undeclared key of another slot succeeded")
	}
}

func TestFinishTimes(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l, clk := newLedger(t, rdb, prefix, "a", "b", "c", "d")
		if c := counts(t, l, "r1"); !c.FirstFinish.IsZero() || !c.LastFinish.IsZero() {
			t.Fatalf("times before any Finish: %v, %v; want zero", c.FirstFinish, c.LastFinish)
		}
		t0 := clk.Now()
		finish := func(org string, at time.Time) {
			t.Helper()
			clk.Advance(at.Sub(clk.Now()))
			if _, err := l.Finish(ctx, "r1", versori.OrgID(org), ledger.Outcome{State: ledger.Succeeded}); err != nil {
				t.Fatal(err)
			}
		}
		finish("a", t0.Add(10*time.Second))
		finish("b", t0.Add(30*time.Second))
		finish("c", t0.Add(5*time.Second)) // a worker whose clock runs late
		finish("a", t0.Add(time.Hour))     // no change: times stay
		finish("b", t0.Add(-time.Hour))    // likewise
		if err := l.Attempt(ctx, "r1", "d", ledger.Attempt{Class: "timeout"}); err != nil {
			t.Fatal(err)
		}
		c := counts(t, l, "r1")
		if !c.FirstFinish.Equal(t0.Add(5*time.Second)) || !c.LastFinish.Equal(t0.Add(30*time.Second)) {
			t.Errorf("FirstFinish, LastFinish = %v, %v; want %v, %v", c.FirstFinish, c.LastFinish, t0.Add(5*time.Second), t0.Add(30*time.Second))
		}
	})
}

func TestRegister(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		clk := newClock()
		l := ledger.New(rdb, ledger.Options{Prefix: prefix, Clock: clk.Now, BatchSize: 2, Parallelism: 3})
		if _, err := l.Register(ctx, "r1", []versori.OrgID{"a"}); !errors.Is(err, ledger.ErrRolloutNotFound) {
			t.Fatalf("Register on a missing rollout: %v; want ErrRolloutNotFound", err)
		}
		if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: "r1", ConnectorID: "c", Version: "v"}); err != nil {
			t.Fatal(err)
		}
		// Batches run in parallel: which of the two "a" is new is not fixed.
		got, err := l.Register(ctx, "r1", []versori.OrgID{"a", "b", "a", "c", "d"})
		want := []ledger.State{"", "", ledger.Pending, "", ""}
		if err == nil && got[0] == ledger.Pending {
			got[0], got[2] = got[2], got[0]
		}
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("first Register = %q, %v; want %q (or the two a swapped)", got, err, want)
		}
		state(t, l, "a", "succeeded")
		state(t, l, "b", "failed")
		state(t, l, "c", "cancelled")
		state(t, l, "d", "retrying")
		got, err = l.Register(ctx, "r1", []versori.OrgID{"a", "b", "c", "d", "e"})
		want = []ledger.State{ledger.Succeeded, ledger.Failed, ledger.Cancelled, ledger.Pending, ""}
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("second Register = %q, %v; want %q", got, err, want)
		}
		checkCounts(t, l, "r1", ledger.Counts{Total: 5, Pending: 2, Retrying: 1, Succeeded: 1, Failed: 1, Cancelled: 1,
			RetryingByClass: map[string]int64{"server_error": 1},
			ByClass:         map[string]int64{"imported": 1, "not_found": 1}, ByVersion: map[string]int64{"1.0.0": 1}})

		if got, err := l.Register(ctx, "r1", []versori.OrgID{"ok", ""}); !errors.Is(err, ledger.ErrInvalidID) || got != nil {
			t.Errorf("Register with an invalid ID = %q, %v; want nil, ErrInvalidID", got, err)
		}
		if got, err := l.Register(ctx, "r1", nil); err != nil || len(got) != 0 {
			t.Errorf("Register(nil) = %q, %v", got, err)
		}
		rdb.HSet(ctx, prefix+":rollout:{r1}:orgs", "corrupt", "{")
		if _, err := l.Register(ctx, "r1", []versori.OrgID{"corrupt"}); err == nil {
			t.Error("Register read a corrupt record without error")
		}
	})
}

func TestRolloutCount(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l := ledger.New(rdb, ledger.Options{Prefix: prefix})
		for i, id := range []string{"a", "b", "a"} {
			if _, err := l.CreateRollout(ctx, ledger.Rollout{ID: id, ConnectorID: "c", Version: "1"}); err != nil {
				t.Fatalf("create %d: %v", i, err)
			}
		}
		if n, err := l.RolloutCount(ctx); err != nil || n != 2 {
			t.Fatalf("RolloutCount = %d, %v; want 2", n, err)
		}
	})
}

// TestRolloutQueue checks that a rollout keeps the queue it was first
// created on, refuses another, and accepts an empty one (a caller that does
// not know it); a rollout recorded without a queue takes the first given.
func TestRolloutQueue(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l := ledger.New(rdb, ledger.Options{Prefix: prefix})
		def := ledger.Rollout{ID: "r1", ConnectorID: "c1", Version: "1.0.0", Queue: "hostile"}
		if _, err := l.CreateRollout(ctx, def); err != nil {
			t.Fatal(err)
		}
		if r, _, err := l.Rollout(ctx, "r1"); err != nil || r.Queue != "hostile" {
			t.Fatalf("Rollout = %+v, %v; want queue hostile", r, err)
		}
		other := def
		other.Queue = "imports"
		if _, err := l.CreateRollout(ctx, other); !errors.Is(err, ledger.ErrQueueMismatch) {
			t.Errorf("CreateRollout on another queue = %v; want ErrQueueMismatch", err)
		}
		other.Queue = ""
		if _, err := l.CreateRollout(ctx, other); err != nil {
			t.Errorf("CreateRollout without a queue = %v; want nil", err)
		}

		old := ledger.Rollout{ID: "r2", ConnectorID: "c1", Version: "1.0.0"}
		if _, err := l.CreateRollout(ctx, old); err != nil {
			t.Fatal(err)
		}
		old.Queue = "q2"
		if _, err := l.CreateRollout(ctx, old); err != nil {
			t.Fatal(err)
		}
		if r, _, _ := l.Rollout(ctx, "r2"); r.Queue != "q2" {
			t.Errorf("queue of a rollout recorded without one = %q; want q2", r.Queue)
		}
	})
}

// TestClaimFailedConcurrently runs many claims of the same failed
// organisations at once: each organisation is claimed exactly once, and the
// claims together are exactly what moved.
func TestClaimFailedConcurrently(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		orgs := orgIDs(50)
		l, _ := newLedger(t, rdb, prefix, orgs...)
		for _, o := range orgs {
			if _, err := l.Finish(ctx, "r1", versori.OrgID(o), ledger.Outcome{State: ledger.Failed, Class: "server_error", HTTPStatus: 503, CountAttempt: true}); err != nil {
				t.Fatal(err)
			}
		}
		const claimers = 8
		got := make([][]versori.OrgID, claimers)
		errs := make([]error, claimers)
		done := make(chan int)
		for i := range claimers {
			go func() {
				got[i], errs[i] = l.ClaimFailed(ctx, "r1", oids(orgs...))
				done <- i
			}()
		}
		for range claimers {
			<-done
		}
		seen := map[string]int{}
		for i := range claimers {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			for _, o := range got[i] {
				seen[string(o)]++
			}
		}
		for _, o := range orgs {
			if seen[o] != 1 {
				t.Errorf("organisation %s claimed %d times; want 1", o, seen[o])
			}
		}
		if c := counts(t, l, "r1"); c.Failed != 0 || c.Pending != int64(len(orgs)) {
			t.Errorf("counts after the claims = %s", fmtCounts(c))
		}
		if moved, err := l.ClaimFailed(ctx, "r1", oids(orgs...)); err != nil || len(moved) != 0 {
			t.Errorf("claim of nothing failed = %v, %v; want none", moved, err)
		}
	})
}

// TestPositionKept checks that a record's position, given by Enlist, stays
// through every change (attempt, finish, requeue, cancel, a late success),
// so readers can tell records apart by it, and that a record Register
// added has none.
func TestPositionKept(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l, _ := newLedger(t, rdb, prefix)
		if _, err := l.Enlist(ctx, "r1", []versori.OrgID{"a", "b", "c", "d"}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Register(ctx, "r1", []versori.OrgID{"plain"}); err != nil {
			t.Fatal(err)
		}
		steps := []error{
			l.Attempt(ctx, "r1", "a", ledger.Attempt{Class: "server_error", HTTPStatus: 503}),
			func() error {
				_, err := l.Finish(ctx, "r1", "a", ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, CountAttempt: true})
				return err
			}(),
			func() error {
				_, err := l.Finish(ctx, "r1", "b", ledger.Outcome{State: ledger.Failed, Class: "not_found", HTTPStatus: 404})
				return err
			}(),
			func() error { _, err := l.Requeue(ctx, "r1", []versori.OrgID{"b"}); return err }(),
			func() error { _, err := l.Cancel(ctx, "r1", []versori.OrgID{"c"}); return err }(),
			func() error {
				_, err := l.Finish(ctx, "r1", "c", ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200})
				return err
			}(),
			func() error {
				_, err := l.Finish(ctx, "r1", "plain", ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200})
				return err
			}(),
		}
		for i, err := range steps {
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		want := map[versori.OrgID]int64{"a": 1, "b": 2, "c": 3, "d": 4, "plain": 0}
		got := map[versori.OrgID]int64{}
		if err := l.Scan(ctx, "r1", func(r ledger.Record) error { got[r.OrgID] = r.Position; return nil }); err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, want) {
			t.Errorf("positions %v; want %v", got, want)
		}
	})
}
