package taskstest_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/tasks/taskstest"
	"github.com/versori/import-worker/versori"
)

// TestLedgerMatchesTheRedisLedger applies the same calls to the in-memory
// Ledger and to *ledger.Ledger on miniredis and compares every answer and
// the records they leave, so a handler tested on the fake behaves as it
// would on Redis.
func TestLedgerMatchesTheRedisLedger(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { rdb.Close() })
	onRedis := ledger.New(rdb, ledger.Options{})
	fake := taskstest.NewLedger()
	ctx := context.Background()

	const a, b, c = "01HZY00000000000000000000A", "01HZY00000000000000000000B", "01HZY00000000000000000000D"
	def := ledger.Rollout{ID: "r1", ConnectorID: testConnector, Version: "1.2.0", CreatedAt: time.UnixMilli(1_700_000_000_000)}
	imported := ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, ConnectorID: testConnector, Version: "1.2.0", Duration: time.Millisecond, CountAttempt: true}
	failed := ledger.Outcome{State: ledger.Failed, Class: "not_found", HTTPStatus: 404, Error: "gone", CountAttempt: true}
	retry := ledger.Attempt{Class: "server_error", HTTPStatus: 503, Error: "busy", Duration: 2 * time.Millisecond}

	type step struct {
		name string
		call func(l tasks.OutcomeLedger) (any, error)
	}
	steps := []step{
		{"org of an unknown rollout", func(l tasks.OutcomeLedger) (any, error) { return l.Org(ctx, "r1", a) }},
		{"add to an unknown rollout", func(l tasks.OutcomeLedger) (any, error) { return l.AddOrgs(ctx, "r1", []versori.OrgID{a}) }},
		{"finish in an unknown rollout", func(l tasks.OutcomeLedger) (any, error) { return l.Finish(ctx, "r1", a, imported) }},
		{"attempt in an unknown rollout", func(l tasks.OutcomeLedger) (any, error) { return nil, l.Attempt(ctx, "r1", a, retry) }},
		{"create", func(l tasks.OutcomeLedger) (any, error) { return l.CreateRollout(ctx, def) }},
		{"create again", func(l tasks.OutcomeLedger) (any, error) { return l.CreateRollout(ctx, def) }},
		{"create another version", func(l tasks.OutcomeLedger) (any, error) {
			d := def
			d.Version = "2.0"
			return l.CreateRollout(ctx, d)
		}},
		{"org not added", func(l tasks.OutcomeLedger) (any, error) { return l.Org(ctx, "r1", a) }},
		{"add", func(l tasks.OutcomeLedger) (any, error) { return l.AddOrgs(ctx, "r1", []versori.OrgID{a, b}) }},
		{"add again", func(l tasks.OutcomeLedger) (any, error) { return l.AddOrgs(ctx, "r1", []versori.OrgID{b, c}) }},
		{"attempt", func(l tasks.OutcomeLedger) (any, error) { return nil, l.Attempt(ctx, "r1", a, retry) }},
		{"attempt unknown org", func(l tasks.OutcomeLedger) (any, error) {
			return nil, l.Attempt(ctx, "r1", "01HZY00000000000000000000E", retry)
		}},
		{"finish imported", func(l tasks.OutcomeLedger) (any, error) { return l.Finish(ctx, "r1", a, imported) }},
		{"finish imported again", func(l tasks.OutcomeLedger) (any, error) { return l.Finish(ctx, "r1", a, imported) }},
		{"fail a succeeded org", func(l tasks.OutcomeLedger) (any, error) { return l.Finish(ctx, "r1", a, failed) }},
		{"attempt on a succeeded org", func(l tasks.OutcomeLedger) (any, error) { return nil, l.Attempt(ctx, "r1", a, retry) }},
		{"fail", func(l tasks.OutcomeLedger) (any, error) { return l.Finish(ctx, "r1", b, failed) }},
		{"fail again", func(l tasks.OutcomeLedger) (any, error) { return l.Finish(ctx, "r1", b, failed) }},
		{"attempt on a failed org", func(l tasks.OutcomeLedger) (any, error) { return nil, l.Attempt(ctx, "r1", b, retry) }},
		{"a failed org imported after all", func(l tasks.OutcomeLedger) (any, error) { return l.Finish(ctx, "r1", b, imported) }},
		{"finish without counting", func(l tasks.OutcomeLedger) (any, error) {
			o := imported
			o.CountAttempt = false
			return l.Finish(ctx, "r1", c, o)
		}},
		{"finish pending", func(l tasks.OutcomeLedger) (any, error) {
			return l.Finish(ctx, "r1", c, ledger.Outcome{State: ledger.Pending, Class: "imported"})
		}},
	}
	sentinels := []error{ledger.ErrRolloutNotFound, ledger.ErrOrgNotFound, ledger.ErrRolloutMismatch, ledger.ErrInvalidOutcome}
	kind := func(err error) error {
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return s
			}
		}
		return err
	}
	for _, s := range steps {
		rv, rerr := s.call(onRedis)
		fv, ferr := s.call(fake)
		if kind(rerr) != kind(ferr) {
			t.Fatalf("%s: Redis ledger error %v, in-memory %v", s.name, rerr, ferr)
		}
		if rerr == nil {
			if r, ok := rv.(ledger.Record); ok {
				rv, fv = comparable(r), comparable(fv.(ledger.Record))
			}
			if rv != fv {
				t.Fatalf("%s: Redis ledger answered %+v, in-memory %+v", s.name, rv, fv)
			}
		}
		for _, org := range []string{a, b, c} {
			want, werr := onRedis.Org(ctx, "r1", versori.OrgID(org))
			got, ok := fake.Record("r1", versori.OrgID(org))
			if (werr == nil) != ok {
				t.Fatalf("after %s: org %s in Redis: %v, in memory: %v", s.name, org, werr, ok)
			}
			if ok && comparable(want) != comparable(got) {
				t.Fatalf("after %s: org %s\n Redis     %+v\n in memory %+v", s.name, org, comparable(want), comparable(got))
			}
		}
	}
	if n := len(fake.Calls()); n != len(steps) {
		t.Fatalf("%d calls recorded, want %d", n, len(steps))
	}
}

// comparable drops the timestamps, which the two ledgers take from
// different clocks.
func comparable(r ledger.Record) ledger.Record {
	r.UpdatedAt, r.FinishedAt = time.Time{}, time.Time{}
	return r
}

func TestLedgerFailAndCalls(t *testing.T) {
	ctx := context.Background()
	l := taskstest.NewLedger()
	down := errors.New("redis down")
	l.Fail = func(method, _ string, _ versori.OrgID) error {
		if method == "Finish" {
			return down
		}
		return nil
	}
	def := ledger.Rollout{ID: "r1", ConnectorID: testConnector, Version: "1"}
	l.Put(def, ledger.Record{OrgID: testOrg, State: ledger.Pending})
	if _, err := l.Finish(ctx, "r1", testOrg, ledger.Outcome{State: ledger.Succeeded, Class: "imported"}); !errors.Is(err, down) {
		t.Fatalf("Finish = %v, want the injected error", err)
	}
	if rec, _ := l.Record("r1", testOrg); rec.State != ledger.Pending {
		t.Fatalf("a failed call changed the record: %+v", rec)
	}
	if err := l.Attempt(ctx, "r1", testOrg, ledger.Attempt{Class: "timeout"}); err != nil {
		t.Fatal(err)
	}
	calls := l.Calls()
	if !slices.Equal(l.Methods(), []string{"Finish", "Attempt"}) || calls[1].Attempt.Class != "timeout" || calls[0].Outcome.Class != "imported" || calls[0].OrgID != testOrg {
		t.Fatalf("calls = %+v", calls)
	}
}
