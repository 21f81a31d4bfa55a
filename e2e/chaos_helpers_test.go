package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/internal/e2etest"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori/versoritest"
)

// chaosRule injects Fault into a fraction P of import calls.
type chaosRule struct {
	P     float64
	Fault versoritest.Fault
}

// newChaosAPI starts a fake API behind a front that, for each import call,
// draws one of rules (or none) and scripts it for that call with FailNext.
// The fake's own rate-based faults can only answer 500; scripting through
// FailNext gives exact statuses (503) and Retry-After variants while the
// fake still counts every call, fault and rate violation itself. The draws
// are seeded, so a failure can be replayed.
func newChaosAPI(t *testing.T, seed uint64, rules []chaosRule, opts ...versoritest.Option) *versoritest.Server {
	t.Helper()
	sum := 0.0
	for _, r := range rules {
		sum += r.P
	}
	if sum > 1 {
		t.Fatalf("chaos rules add up to %v", sum)
	}
	api := versoritest.NewUnstartedServer(opts...)
	var mu sync.Mutex
	rnd := mrand.New(mrand.NewPCG(seed, seed*31+7))
	front := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if org, ok := importOrg(r); ok {
			mu.Lock()
			u := rnd.Float64()
			mu.Unlock()
			for _, rule := range rules {
				if u < rule.P {
					api.FailNext(org, 1, rule.Fault)
					break
				}
				u -= rule.P
			}
		}
		api.ServeHTTP(w, r)
	})
	ts := httptest.NewServer(front)
	t.Cleanup(ts.Close)
	api.URL = ts.URL + versoritest.DefaultPrefix
	return api
}

// importOrg returns the organisation of an import call
// (POST .../o/{org}/connectors/{c}/versions/{v}/library/import).
func importOrg(r *http.Request) (string, bool) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/library/import") {
		return "", false
	}
	parts := strings.Split(r.URL.Path, "/")
	for i, p := range parts {
		if p == "o" && i+1 < len(parts) {
			return parts[i+1], true
		}
	}
	return "", false
}

// scrapeMetric scrapes p and returns the metric's value, failing the test if
// the metric is missing.
func scrapeMetric(t *testing.T, p *e2etest.Process, name string) float64 {
	t.Helper()
	text, err := p.Scrape()
	if err != nil {
		t.Fatalf("scrape %s: %v", p.Name, err)
	}
	v, ok := e2etest.MetricSum(text, name)
	if !ok {
		t.Fatalf("%s does not export %s", p.Name, name)
	}
	return v
}

// httpStatus returns the status of GET http://addr+path, or 0 when the
// request failed.
func httpStatus(addr, path string) int {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// eventually polls cond every 50 ms until it holds or timeout passes.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitSucceeded waits until at least n organisations of the rollout have
// succeeded.
func (f *fleet) waitSucceeded(rolloutID string, n int64, timeout time.Duration) {
	f.t.Helper()
	ok := eventually(timeout, func() bool {
		_, c, err := f.led.Rollout(context.Background(), rolloutID)
		return err == nil && c.Succeeded >= n
	})
	if !ok {
		_, c, err := f.led.Rollout(context.Background(), rolloutID)
		f.t.Fatalf("rollout %s: fewer than %d succeeded after %s: %+v (err %v)", rolloutID, n, timeout, c, err)
	}
}

// archived returns the archived tasks of the import queue.
func archived(t *testing.T, rdb redis.UniversalClient) []*asynq.TaskInfo {
	t.Helper()
	in := asynq.NewInspectorFromRedisClient(rdb)
	qi, err := in.GetQueueInfo(tasks.DefaultQueue)
	if err != nil {
		t.Fatalf("queue info: %v", err)
	}
	if qi.Archived == 0 {
		return nil
	}
	ts, err := in.ListArchivedTasks(tasks.DefaultQueue, asynq.PageSize(1000))
	if err != nil {
		t.Fatalf("list archived tasks: %v", err)
	}
	return ts
}

// checkEveryOrgImportedOnce fails the test unless the fake imported into
// each of the first n organisations exactly once.
func checkEveryOrgImportedOnce(t *testing.T, api *versoritest.Server, n int) {
	t.Helper()
	bad := 0
	for org := range orgIDs(n) {
		if k := api.ImportsOf(org); k != 1 {
			if bad < 5 {
				t.Errorf("organisation %s imported %d times, want 1", org, k)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d organisations not imported exactly once", bad, n)
	}
}

// workersAlive fails the test if any worker process has exited.
func (f *fleet) workersAlive() {
	f.t.Helper()
	for _, w := range f.workers {
		if w.Exited() {
			f.t.Errorf("%s exited (it must survive the fault):\n%s", w.Name, w.Logs())
		}
	}
}

// secret is a distinctive API key and the fragments of it a scan looks for:
// every 10-character piece of its random part, so a key cut in two by a
// truncated message is found as well as a whole one.
type secret struct {
	key   string
	frags []string
}

func newSecret() secret {
	var b [16]byte
	_, _ = rand.Read(b[:])
	random := hex.EncodeToString(b[:])
	// A '/' and a '+' in the middle: JSON (PHP's \/ and \u002b),
	// percent-encoding and base64 each write them differently, and the
	// scrubber must catch every form.
	s := secret{key: "vk_live_reliability_" + random[:16] + "/+" + random[16:]}
	for i := 0; i+10 <= len(random); i++ {
		s.frags = append(s.frags, random[i:i+10])
	}
	return s
}

// find returns the first fragment of the key found in text, case folded.
func (s secret) find(text string) (string, bool) {
	lower := strings.ToLower(text)
	for _, f := range s.frags {
		if strings.Contains(lower, f) {
			return f, true
		}
	}
	return "", false
}

// redisEntry is one key and a text rendering of its whole value.
type redisEntry struct {
	Key, Type, Value string
}

// dumpRedis returns every key of the database with its whole value,
// whatever its type.
func dumpRedis(ctx context.Context, rdb *redis.Client) ([]redisEntry, error) {
	var out []redisEntry
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		typ, err := rdb.Type(ctx, key).Result()
		if err != nil {
			return nil, fmt.Errorf("TYPE %q: %w", key, err)
		}
		var parts []string
		switch typ {
		case "string":
			v, err := rdb.Get(ctx, key).Result()
			if err != nil && err != redis.Nil {
				return nil, err
			}
			parts = []string{v}
		case "hash":
			m, err := rdb.HGetAll(ctx, key).Result()
			if err != nil {
				return nil, err
			}
			for k, v := range m {
				parts = append(parts, k, v)
			}
		case "list":
			parts, err = rdb.LRange(ctx, key, 0, -1).Result()
		case "set":
			parts, err = rdb.SMembers(ctx, key).Result()
		case "zset":
			var zs []redis.Z
			zs, err = rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
			for _, z := range zs {
				parts = append(parts, fmt.Sprint(z.Member), strconv.FormatFloat(z.Score, 'g', -1, 64))
			}
		case "stream":
			var xs []redis.XMessage
			xs, err = rdb.XRange(ctx, key, "-", "+").Result()
			for _, x := range xs {
				parts = append(parts, x.ID, fmt.Sprint(x.Values))
			}
		case "none":
			continue // expired between SCAN and TYPE
		default:
			return nil, fmt.Errorf("key %q has type %q, which the scan cannot read", key, typ)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s %q: %w", typ, key, err)
		}
		slices.Sort(parts)
		out = append(out, redisEntry{Key: key, Type: typ, Value: strings.Join(parts, "\n")})
	}
	return out, iter.Err()
}
