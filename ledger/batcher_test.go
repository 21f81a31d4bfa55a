package ledger_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/versori"
)

// gate holds the first command named name (one of names split by "|")
// until released, whether sent alone or in a pipeline, and counts the
// commands of that name that succeeded, and the pipelines that carried
// both a script and an HMGET.
type gate struct {
	name    string
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	counted int
	mixed   int // pipelines with a script call and an HMGET
}

func newGate(name string) *gate {
	return &gate{name: name, entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *gate) matches(cmd redis.Cmder) bool {
	for _, n := range strings.Split(g.name, "|") {
		if cmd.Name() == n {
			return true
		}
	}
	return false
}

func (g *gate) see(cmds []redis.Cmder, next func() error) error {
	for _, cmd := range cmds {
		if g.matches(cmd) {
			g.once.Do(func() {
				close(g.entered)
				<-g.release
			})
			break
		}
	}
	err := next()
	g.mu.Lock()
	defer g.mu.Unlock()
	script, hmget := false, false
	for _, cmd := range cmds {
		if g.matches(cmd) && cmd.Err() == nil {
			g.counted++
		}
		script = script || cmd.Name() == "evalsha" || cmd.Name() == "eval"
		hmget = hmget || cmd.Name() == "hmget"
	}
	if len(cmds) > 1 && script && hmget {
		g.mixed++
	}
	return err
}

func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return g.see(cmds, func() error { return next(ctx, cmds) })
	}
}

func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return g.see([]redis.Cmder{cmd}, func() error { return next(ctx, cmd) })
	}
}

func (g *gate) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.counted
}

// waitFor polls cond until it holds, failing the test after a minute: the
// tests wait for goroutines to queue, not for a time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// gatedLedger is a rollout r1 of n organisations on miniredis, behind a
// client whose first command named cmd waits for the gate.
func gatedLedger(t *testing.T, cmd string, n int) (*ledger.Ledger, *gate, []string, *redis.Client) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	ids := orgIDs(n)
	l, _ := newLedger(t, rdb, "test", ids...)
	g := newGate(cmd)
	rdb.AddHook(g)
	return l, g, ids, rdb
}

// Calls made while a batch is in flight go together in the next one: ten
// finishes, the first held in Redis until nine more queue, take two script
// calls, and each still gets its own answer.
func TestBatcherFinishesShareScriptCalls(t *testing.T) {
	l, g, ids, _ := gatedLedger(t, "evalsha|eval", 10)
	b := ledger.NewBatcher(l, ledger.BatcherOptions{})
	ctx := context.Background()
	ok := ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, Version: "1", CountAttempt: true}
	res := make([]ledger.Finished, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	wg.Go(func() { res[0], errs[0] = b.Finish(ctx, "r1", versori.OrgID(ids[0]), ok) })
	<-g.entered
	for i := 1; i < len(ids); i++ {
		wg.Go(func() { res[i], errs[i] = b.Finish(ctx, "r1", versori.OrgID(ids[i]), ok) })
	}
	waitFor(t, "nine queued finishes", func() bool { return b.Queued("r1") == 9 })
	close(g.release)
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || !res[i].Changed {
			t.Errorf("Finish(%s) = %+v, %v; want changed", ids[i], res[i], errs[i])
		}
	}
	if res[0].Pending != 9 {
		t.Errorf("first batch left %d pending; want 9", res[0].Pending)
	}
	for i := 1; i < len(ids); i++ {
		if res[i].Pending != 0 {
			t.Errorf("second batch: %s sees %d pending; want 0", ids[i], res[i].Pending)
		}
	}
	if n := g.count(); n != 2 {
		t.Errorf("%d script calls for two batches", n)
	}
	checkCounts(t, l, "r1", ledger.Counts{Total: 10, Succeeded: 10,
		ByClass: map[string]int64{"imported": 10}, ByVersion: map[string]int64{"1": 10}})
	if b.Queued("r1") != 0 {
		t.Error("calls left queued")
	}
}

// Reads and finishes queued together go in one pipeline, the finishes
// first, so a read in the batch sees them; a Redis that lost its scripts
// (restarted, or SCRIPT FLUSH) gets the script loaded again.
func TestBatcherPipelinesReadsWithFinishes(t *testing.T) {
	l, g, ids, rdb := gatedLedger(t, "evalsha|eval", 5)
	b := ledger.NewBatcher(l, ledger.BatcherOptions{})
	ctx := context.Background()
	ok := ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, Version: "1", CountAttempt: true}
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := b.Finish(ctx, "r1", versori.OrgID(ids[0]), ok); err != nil {
			t.Error(err)
		}
	})
	<-g.entered
	fins := make([]ledger.Finished, 3)
	recs := make([]ledger.Record, 2)
	errs := make([]error, 5)
	for i := 1; i <= 2; i++ {
		wg.Go(func() { fins[i], errs[i] = b.Finish(ctx, "r1", versori.OrgID(ids[i]), ok) })
	}
	wg.Go(func() { recs[0], errs[3] = b.Org(ctx, "r1", versori.OrgID(ids[3])) })
	waitFor(t, "three queued calls", func() bool { return b.Queued("r1") == 3 })
	// A read of an organisation finished in the same batch.
	wg.Go(func() { recs[1], errs[4] = b.Org(ctx, "r1", versori.OrgID(ids[1])) })
	waitFor(t, "four queued calls", func() bool { return b.Queued("r1") == 4 })
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	for i := 1; i <= 2; i++ {
		if !fins[i].Changed || fins[i].Pending != 2 {
			t.Errorf("finish of %s: %+v; want changed, 2 pending", ids[i], fins[i])
		}
	}
	if recs[0].State != ledger.Pending || recs[1].State != ledger.Succeeded {
		t.Errorf("reads: %s %s, %s %s; want pending, then succeeded (finished in the same batch)", recs[0].OrgID, recs[0].State, recs[1].OrgID, recs[1].State)
	}
	if g.mixed != 1 {
		t.Errorf("%d pipelines carried reads with finishes; want the second batch in one", g.mixed)
	}
	checkCounts(t, l, "r1", ledger.Counts{Total: 5, Pending: 2, Succeeded: 3,
		ByClass: map[string]int64{"imported": 3}, ByVersion: map[string]int64{"1": 3}})
}

// Reads share HMGETs the same way, and an organisation missing from the
// rollout gets its own error without failing the batch.
func TestBatcherReadsShareHMGET(t *testing.T) {
	l, g, ids, _ := gatedLedger(t, "hmget", 6)
	b := ledger.NewBatcher(l, ledger.BatcherOptions{})
	ctx := context.Background()
	if _, err := l.Finish(ctx, "r1", versori.OrgID(ids[2]), ledger.Outcome{State: ledger.Failed, Class: "not_found", HTTPStatus: 404}); err != nil {
		t.Fatal(err)
	}
	ask := append([]string{}, ids...)
	ask = append(ask, "org-missing")
	recs := make([]ledger.Record, len(ask))
	errs := make([]error, len(ask))
	var wg sync.WaitGroup
	wg.Go(func() { recs[0], errs[0] = b.Org(ctx, "r1", versori.OrgID(ask[0])) })
	<-g.entered
	for i := 1; i < len(ask); i++ {
		wg.Go(func() { recs[i], errs[i] = b.Org(ctx, "r1", versori.OrgID(ask[i])) })
	}
	waitFor(t, "six queued reads", func() bool { return b.Queued("r1") == len(ask)-1 })
	close(g.release)
	wg.Wait()
	for i, id := range ask {
		switch {
		case id == "org-missing":
			if !errors.Is(errs[i], ledger.ErrOrgNotFound) {
				t.Errorf("Org(%s) error = %v; want ErrOrgNotFound", id, errs[i])
			}
		case errs[i] != nil:
			t.Errorf("Org(%s): %v", id, errs[i])
		case string(recs[i].OrgID) != id:
			t.Errorf("Org(%s) returned the record of %s", id, recs[i].OrgID)
		case i == 2 && recs[i].State != ledger.Failed, i != 2 && recs[i].State != ledger.Pending:
			t.Errorf("Org(%s) state %s", id, recs[i].State)
		}
	}
	if n := g.count(); n != 2 {
		t.Errorf("%d HMGETs for two batches", n)
	}
}

// FinishAll applies a batch in order: a duplicate sees the first write, a
// missing organisation and a bad outcome are refused alone, and pending is
// the count after the whole batch.
func TestFinishAllInOrder(t *testing.T) {
	forEach(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		ids := orgIDs(3)
		l, _ := newLedger(t, rdb, prefix, ids...)
		ok := ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, Version: "1", CountAttempt: true}
		fail := ledger.Outcome{State: ledger.Failed, Class: "server_error", HTTPStatus: 503, CountAttempt: true}
		res, err := l.FinishAll(ctx, "r1", []ledger.OrgOutcome{
			{OrgID: versori.OrgID(ids[0]), Outcome: fail},
			{OrgID: "nobody", Outcome: ok},
			{OrgID: versori.OrgID(ids[0]), Outcome: ok}, // failed -> succeeded in the same batch
			{OrgID: versori.OrgID(ids[1]), Outcome: ledger.Outcome{State: ledger.Pending, Class: "imported"}},
			{OrgID: versori.OrgID(ids[0]), Outcome: fail}, // succeeded stays
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []struct {
			changed bool
			err     error
		}{{true, nil}, {false, ledger.ErrOrgNotFound}, {true, nil}, {false, ledger.ErrInvalidOutcome}, {false, nil}}
		for i, w := range want {
			if res[i].Changed != w.changed || !errors.Is(res[i].Err, w.err) || (w.err == nil) != (res[i].Err == nil) {
				t.Errorf("result %d = %+v; want changed %v, error %v", i, res[i], w.changed, w.err)
			}
			if res[i].Err == nil && res[i].Pending != 2 {
				t.Errorf("result %d: pending %d; want 2", i, res[i].Pending)
			}
		}
		rec, err := l.Org(ctx, "r1", versori.OrgID(ids[0]))
		if err != nil || rec.State != ledger.Succeeded || rec.Attempts != 2 {
			t.Errorf("record after the batch: %+v, %v; want succeeded after 2 attempts", rec, err)
		}
		checkCounts(t, l, "r1", ledger.Counts{Total: 3, Pending: 2, Succeeded: 1,
			ByClass: map[string]int64{"imported": 1}, ByVersion: map[string]int64{"1": 1}})
		if _, err := l.FinishAll(ctx, "no-such-rollout", []ledger.OrgOutcome{{OrgID: versori.OrgID(ids[0]), Outcome: ok}}); !errors.Is(err, ledger.ErrRolloutNotFound) {
			t.Errorf("FinishAll on an unknown rollout: %v; want ErrRolloutNotFound", err)
		}
	})
}

// With Redis gone every call of a batch gets the error, promptly, and the
// Batcher works again when Redis is back.
func TestBatcherRedisAway(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	ids := orgIDs(4)
	l, _ := newLedger(t, rdb, "test", ids...)
	b := ledger.NewBatcher(l, ledger.BatcherOptions{})
	ctx := context.Background()
	ok := ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, CountAttempt: true}
	addr := mr.Addr()
	mr.Close()
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i := range ids {
		wg.Go(func() { _, errs[i] = b.Finish(ctx, "r1", versori.OrgID(ids[i]), ok) })
	}
	wg.Wait()
	for i, err := range errs {
		var ne net.Error
		if err == nil || !(errors.As(err, &ne) || strings.Contains(err.Error(), "connect")) {
			t.Errorf("Finish %d with Redis away: %v; want a connection error", i, err)
		}
	}
	if err := mr.StartAddr(addr); err != nil {
		t.Fatal(err)
	}
	// miniredis keeps its data across the restart.
	if f, err := b.Finish(ctx, "r1", versori.OrgID(ids[0]), ok); err != nil || !f.Changed || f.Pending != 3 {
		t.Errorf("Finish after Redis came back: %+v, %v; want changed, 3 pending", f, err)
	}
}

// With WaitReplicas an outcome counts as recorded once a replica has it
// (WAIT on the connection that wrote it). Without a replica the write
// still happens and says what it did, with ErrNotReplicated, so a caller
// that writes it again knows it had changed; with one, both the single
// and the batched finish pass.
func TestWaitReplicas(t *testing.T) {
	if testing.Short() || !haveRedisServer(t) {
		t.Skip("needs redis-server")
	}
	ctx := context.Background()
	master := redistest.Start(t, redistest.Options{})
	ids := orgIDs(3)
	seed := ledger.New(master.Client(), ledger.Options{Prefix: "wait"})
	if _, err := seed.CreateRollout(ctx, ledger.Rollout{ID: "r1", ConnectorID: "c1", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := seed.AddOrgs(ctx, "r1", oids(ids...)); err != nil {
		t.Fatal(err)
	}
	l := ledger.New(master.Client(), ledger.Options{Prefix: "wait", WaitReplicas: 1, WaitTimeout: 100 * time.Millisecond})
	ok := ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, CountAttempt: true}

	f, err := l.Finish(ctx, "r1", versori.OrgID(ids[0]), ok)
	if !errors.Is(err, ledger.ErrNotReplicated) || !f.Changed || f.Pending != 2 {
		t.Fatalf("no replica: Finish = %+v, %v; want changed, 2 pending, ErrNotReplicated", f, err)
	}
	if f, err := l.Finish(ctx, "r1", versori.OrgID(ids[0]), ok); !errors.Is(err, ledger.ErrNotReplicated) || f.Changed {
		t.Fatalf("no replica, written again: %+v, %v; want unchanged, ErrNotReplicated", f, err)
	}

	replica := redistest.Start(t, redistest.Options{Args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port())}})
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, _ := master.Client().Info(ctx, "replication").Result()
		if strings.Contains(info, "connected_slaves:1") && strings.Contains(info, "state=online") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica on port %d never came online:\n%s", replica.Port(), info)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A replica acknowledges within milliseconds; the bound is for a
	// loaded machine, and only a failure waits it out.
	l = ledger.New(master.Client(), ledger.Options{Prefix: "wait", WaitReplicas: 1, WaitTimeout: 2 * time.Second})
	if f, err := l.Finish(ctx, "r1", versori.OrgID(ids[1]), ok); err != nil || !f.Changed || f.Pending != 1 {
		t.Fatalf("one replica: Finish = %+v, %v; want changed, 1 pending", f, err)
	}
	b := ledger.NewBatcher(l, ledger.BatcherOptions{})
	if f, err := b.Finish(ctx, "r1", versori.OrgID(ids[2]), ok); err != nil || !f.Changed || f.Pending != 0 {
		t.Fatalf("one replica, batched: Finish = %+v, %v; want changed, 0 pending", f, err)
	}
	if n, err := replica.Client().HLen(ctx, "wait:rollout:{r1}:orgs").Result(); err != nil || n != 3 {
		t.Fatalf("the replica holds %d records (%v); want 3", n, err)
	}
}
