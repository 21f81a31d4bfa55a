package tasks

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/orglist"
	"github.com/versori/import-worker/versori"
)

// TestEnqueueAllCanonicalisesIDs enqueues four spellings of one
// organisation (upper, lower, two mixed), parsed at the edge (ParseOrgID,
// orglist.ParseIDs), and re-runs the rollout with the connector parsed from
// lower case: one record, one task, and no "another connector".
func TestEnqueueAllCanonicalisesIDs(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	p := NewProducer(rdb, ProducerConfig{})
	r := Rollout{ID: "r1", ConnectorID: testConnector, Version: "1.0.0"}

	const org = "01HZYABCDEFGHJKMNPQRSTVWXY"
	spellings := []string{org, strings.ToLower(org), "01hzyABCDEFGHJKMNPQRSTVWXY", "01HZYabcdefghjkmnpqrstvwxy"}
	ids, invalid := orglist.ParseIDs(slices.Values(spellings))
	sum, err := p.EnqueueAll(ctx, r, ids, nil)
	if err != nil || *invalid != nil {
		t.Fatal(err, *invalid)
	}
	if sum.Enqueued != 1 || sum.AlreadyEnqueued != 3 {
		t.Errorf("summary %+v; want 1 enqueued, 3 already enqueued", sum)
	}
	// One at a time too, lower case first this time.
	for _, s := range []string{"01hzyabcdefghjkmnpqrstvwxz", "01HZYABCDEFGHJKMNPQRSTVWXZ"} {
		id, err := versori.ParseOrgID(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Enqueue(ctx, r, id); err != nil {
			t.Fatal(err)
		}
	}
	_, c, err := p.Ledger().Rollout(ctx, "r1")
	if err != nil || c.Total != 2 {
		t.Errorf("ledger total %d, %v; want 2", c.Total, err)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for _, id := range []versori.OrgID{org, "01HZYABCDEFGHJKMNPQRSTVWXZ"} {
		if info, err := insp.GetTaskInfo(DefaultQueue, TaskID("r1", id)); err != nil || info == nil {
			t.Errorf("no task under the canonical ID %s: %v", id, err)
		}
		if _, err := p.Ledger().Org(ctx, "r1", id); err != nil {
			t.Errorf("no record under the canonical ID %s: %v", id, err)
		}
	}
	if qi, err := insp.GetQueueInfo(DefaultQueue); err != nil || qi.Size != 2 {
		t.Errorf("queue holds %v tasks (%v); want 2", qi, err)
	}

	lower := r
	lower.ConnectorID, err = versori.ParseConnectorID(strings.ToLower(testConnector))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.EnqueueAll(ctx, lower, slices.Values([]versori.OrgID{org}), nil); err != nil {
		t.Errorf("re-run with the connector in lower case: %v", err)
	}
	ro, _, _ := p.Ledger().Rollout(ctx, "r1")
	if ro.ConnectorID != testConnector {
		t.Errorf("connector recorded as %q; want %q", ro.ConnectorID, testConnector)
	}

	// A stream with an invalid ID stops there, with its error.
	ids, invalid = orglist.ParseIDs(slices.Values([]string{"01HZYABCDEFGHJKMNPQRSTVWX0", "nope", "01HZYABCDEFGHJKMNPQRSTVWX1"}))
	if sum, err := p.EnqueueAll(ctx, r, ids, nil); err != nil || sum.Enqueued != 1 || *invalid == nil {
		t.Errorf("stream with an invalid ID: %+v, %v, invalid %v; want 1 enqueued and the error", sum, err, *invalid)
	}
}

// TestProducerRecordsQueue checks that the rollout keeps the producer's
// queue and that a producer on another queue is refused.
func TestProducerRecordsQueue(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	r := Rollout{ID: "r1", ConnectorID: testConnector, Version: "1.0.0"}
	if err := NewProducer(rdb, ProducerConfig{Task: TaskOptions{Queue: "hostile"}}).CreateRollout(ctx, r); err != nil {
		t.Fatal(err)
	}
	ro, _, err := ledger.New(rdb, ledger.Options{}).Rollout(ctx, "r1")
	if err != nil || ro.Queue != "hostile" {
		t.Errorf("rollout %+v, %v; want queue hostile", ro, err)
	}
	if err := NewProducer(rdb, ProducerConfig{}).CreateRollout(ctx, r); !errors.Is(err, ErrQueueMismatch) {
		t.Errorf("CreateRollout on the default queue = %v; want ErrQueueMismatch", err)
	}
}

func TestValidateQueue(t *testing.T) {
	for name, want := range map[string]string{
		"imports":                "",
		"imports-staging_2.eu":   "",
		strings.Repeat("q", 64):  "",
		"":                       "empty",
		"a b":                    "not a letter",
		"{x}":                    "not a letter",
		"caf\u00e9":              "not a letter",
		strings.Repeat("q", 100): "100 characters long, at most 64",
	} {
		err := ValidateQueue(name)
		switch {
		case want == "" && err != nil:
			t.Errorf("ValidateQueue(%q) = %v; want nil", name, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("ValidateQueue(%q) = %v; want an error saying %q", name, err, want)
		}
	}
}
