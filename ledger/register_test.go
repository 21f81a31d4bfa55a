package ledger

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

func TestRegisterReportsPreviousStates(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	l := New(rdb, Options{})
	ctx := context.Background()
	const a, b, c = "01HZY0000000000000000000A1", "01HZY0000000000000000000B2", "01HZY0000000000000000000C3"
	if _, err := l.Register(ctx, "nope", []string{a}); !errors.Is(err, ErrRolloutNotFound) {
		t.Fatalf("unknown rollout: err = %v", err)
	}
	if _, err := l.CreateRollout(ctx, Rollout{ID: "r1", ConnectorID: "01HZY00000000000000000000C", Version: "1.0", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	got, err := l.Register(ctx, "r1", []string{a, b, a})
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != "" || got[1] != "" || got[2] != Pending {
		t.Fatalf("first register = %q", got)
	}
	if _, err := l.Finish(ctx, "r1", a, Outcome{State: Succeeded, Class: "imported", HTTPStatus: 200, CountAttempt: true}); err != nil {
		t.Fatal(err)
	}
	got, err = l.Register(ctx, "r1", []string{a, b, c})
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != Succeeded || got[1] != Pending || got[2] != "" {
		t.Fatalf("second register = %q", got)
	}
	_, counts, err := l.Rollout(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if counts.Total != 3 || counts.Pending != 2 || counts.Succeeded != 1 {
		t.Fatalf("counts = %+v", counts)
	}
}
