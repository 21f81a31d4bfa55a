package e2e

// Helpers for the tests of the whole service on a Redis Cluster and on
// Redis Sentinel (topology_test.go). They are black-box: the real worker,
// enqueue and fakeapi binaries, Redis servers of the test's own, the CLI's
// JSON and the fake's control endpoints; nothing here reads the ledger or
// asynq's keys directly.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/internal/e2etest"
	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/versori/versoritest"
)

// redisCluster is a Redis Cluster of masters without replicas, each a
// redis-server of the test's own.
type redisCluster struct {
	nodes []*redistest.Server
}

// startRedisCluster starts n cluster-enabled redis-servers on free ports,
// joins them with `redis-cli --cluster create` (slots split evenly, no
// replicas) and waits until every node reports cluster_state:ok and agrees
// on the slots.
func startRedisCluster(t *testing.T, n int) *redisCluster {
	t.Helper()
	redistest.RequireBinaries(t, "redis-server", "redis-cli")
	c := &redisCluster{}
	var addrs []string
	for range n {
		s := redistest.Start(t, redistest.Options{Args: []string{"--cluster-enabled", "yes", "--cluster-node-timeout", "5000"}})
		c.nodes = append(c.nodes, s)
		addrs = append(addrs, s.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	ok := eventually(20*time.Second, func() bool {
		for _, s := range c.nodes {
			info, err := s.Client().ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(n)) {
				return false
			}
		}
		return true
	})
	if !ok {
		info, _ := c.nodes[0].Client().ClusterInfo(ctx).Result()
		t.Fatalf("cluster of %d nodes not ok after 20s:\n%s", n, info)
	}
	// cluster_state:ok on every node is not yet a cluster client's view: wait
	// until one can write a key to each master.
	cc := c.client(t)
	ok = eventually(10*time.Second, func() bool {
		for i := range 3 * n {
			k := fmt.Sprintf("e2e-probe-%d", i)
			if cc.Set(ctx, k, "1", time.Minute).Err() != nil || cc.Del(ctx, k).Err() != nil {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("a cluster client cannot write to every master")
	}
	return c
}

// URL is the cluster's redis-cluster:// URL, naming every node.
func (c *redisCluster) URL() string {
	var addrs []string
	for _, s := range c.nodes {
		addrs = append(addrs, s.Addr())
	}
	return "redis-cluster://" + strings.Join(addrs, ",")
}

func (c *redisCluster) client(t *testing.T) *redis.ClusterClient {
	var addrs []string
	for _, s := range c.nodes {
		addrs = append(addrs, s.Addr())
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// keysPerNode returns DBSIZE of every node, to show the data is spread over
// the cluster.
func (c *redisCluster) keysPerNode(ctx context.Context) []int64 {
	var out []int64
	for _, s := range c.nodes {
		out = append(out, s.Client().DBSize(ctx).Val())
	}
	return out
}

// sentinelSet is a master, one replica and three sentinels watching them.
type sentinelSet struct {
	name      string
	master    *redistest.Server
	replica   *redistest.Server
	sentinels []*redistest.Server
}

// startSentinelSet starts a master, a replica of it (--replicaof) and three
// sentinels (redis-server --sentinel) with quorum 2, down-after 1 s and a
// failover timeout of 3 s, and waits until every sentinel knows the
// replica and the two other sentinels, so a failover can be agreed.
func startSentinelSet(t *testing.T) *sentinelSet {
	t.Helper()
	redistest.RequireBinaries(t, "redis-server")
	ss := &sentinelSet{name: "mymaster"}
	ss.master = redistest.Start(t, redistest.Options{})
	ss.replica = redistest.Start(t, redistest.Options{Args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(ss.master.Port())}})
	ctx := context.Background()
	if !eventually(10*time.Second, func() bool {
		return strings.Contains(ss.replica.Client().Info(ctx, "replication").Val(), "master_link_status:up")
	}) {
		t.Fatalf("the replica never linked to the master:\n%s", ss.replica.Client().Info(ctx, "replication").Val())
	}
	conf := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %[1]s 1000\nsentinel failover-timeout %[1]s 3000\n",
		ss.name, ss.master.Port())
	for range 3 {
		ss.sentinels = append(ss.sentinels, redistest.Start(t, redistest.Options{Config: conf, Args: []string{"--sentinel"}}))
	}
	ready := func() bool {
		for _, s := range ss.sentinels {
			m, err := s.Client().Do(ctx, "SENTINEL", "MASTER", ss.name).Result()
			if err != nil {
				return false
			}
			f := fieldsOf(m)
			if f["num-other-sentinels"] != "2" || f["num-slaves"] != "1" || f["flags"] != "master" {
				return false
			}
			r, err := s.Client().Do(ctx, "SENTINEL", "REPLICAS", ss.name).Result()
			if err != nil {
				return false
			}
			rs, _ := r.([]any)
			if len(rs) != 1 || fieldsOf(rs[0])["flags"] != "slave" {
				return false
			}
		}
		return true
	}
	if !eventually(30*time.Second, ready) {
		m, _ := ss.sentinels[0].Client().Do(ctx, "SENTINEL", "MASTER", ss.name).Result()
		t.Fatalf("the sentinels never agreed on the master, its replica and each other: %v", m)
	}
	return ss
}

// fieldsOf turns a sentinel's reply (a map in RESP3, a flat list of
// name, value pairs in RESP2) into a map.
func fieldsOf(v any) map[string]string {
	out := map[string]string{}
	switch m := v.(type) {
	case map[any]any:
		for k, v := range m {
			out[fmt.Sprint(k)] = fmt.Sprint(v)
		}
	case []any:
		for i := 0; i+1 < len(m); i += 2 {
			out[fmt.Sprint(m[i])] = fmt.Sprint(m[i+1])
		}
	}
	return out
}

// URL is the redis-sentinel:// URL naming the three sentinels.
func (ss *sentinelSet) URL() string {
	var addrs []string
	for _, s := range ss.sentinels {
		addrs = append(addrs, s.Addr())
	}
	return "redis-sentinel://" + strings.Join(addrs, ",") + "?master=" + ss.name
}

// current returns the servers the sentinels name master and replica now,
// once the replica is linked to the master and every sentinel agrees.
func (ss *sentinelSet) current(t *testing.T) (master, replica *redistest.Server) {
	t.Helper()
	ctx := context.Background()
	ok := eventually(30*time.Second, func() bool {
		p := ss.masterPort(ctx)
		for _, s := range ss.sentinels {
			r, err := s.Client().Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", ss.name).StringSlice()
			if err != nil || len(r) != 2 || r[1] != strconv.Itoa(p) {
				return false
			}
		}
		switch p {
		case ss.master.Port():
			master, replica = ss.master, ss.replica
		case ss.replica.Port():
			master, replica = ss.replica, ss.master
			t.Logf("the sentinels failed over on their own before the fault: the master is now port %d", p)
		default:
			return false
		}
		return strings.Contains(replica.Client().Info(ctx, "replication").Val(), "master_link_status:up")
	})
	if !ok {
		t.Fatalf("the sentinels do not agree on a master with a linked replica:\n%s", ss.sentinelLogs())
	}
	return master, replica
}

// sentinelLogs returns the logs of the sentinels, for a failure message.
func (ss *sentinelSet) sentinelLogs() string {
	var out []string
	for i, s := range ss.sentinels {
		b, _ := os.ReadFile(filepath.Join(s.Dir(), "redis.log"))
		out = append(out, fmt.Sprintf("--- sentinel %d (%s):\n%s", i, s.Addr(), b))
	}
	return strings.Join(out, "\n")
}

// masterPort asks the first sentinel that answers for the master's port.
func (ss *sentinelSet) masterPort(ctx context.Context) int {
	for _, s := range ss.sentinels {
		r, err := s.Client().Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", ss.name).StringSlice()
		if err == nil && len(r) == 2 {
			p, _ := strconv.Atoi(r[1])
			return p
		}
	}
	return 0
}

// answer is one import call the fake answered, as its front saw it.
type answer struct {
	at     time.Time
	org    string
	status int
}

// fakeAPI is the cmd/fakeapi binary, with a recording front: a reverse
// proxy in the test that notes the time and status of every import answer,
// so the test can measure stalls to the millisecond (the fake's own
// /_stats counts per whole second).
type fakeAPI struct {
	t     *testing.T
	key   string
	admin string // http://host:port of the fake itself
	URL   string // the API base URL the workers use (the front)

	mu      sync.Mutex
	answers []answer
}

// startFakeAPI starts the fake API process with args added to its flags,
// and its front.
func startFakeAPI(t *testing.T, args ...string) *fakeAPI {
	t.Helper()
	addr := e2etest.FreeAddr(t)
	f := &fakeAPI{t: t, key: "e2e-topology-key", admin: "http://" + addr}
	p := e2etest.StartWorker(t, e2etest.WorkerOptions{
		Bin:    e2etest.Bin(t, "fakeapi"),
		Args:   append([]string{"--addr", addr, "--api-key", f.key}, args...),
		Name:   "fakeapi",
		NoWait: true,
	})
	if !eventually(10*time.Second, func() bool { return httpStatus(addr, "/_health") == 200 }) {
		t.Fatalf("fakeapi not healthy after 10s:\n%s", p.Logs())
	}
	target, _ := url.Parse(f.admin)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 200, IdleConnTimeout: 30 * time.Second}
	rp.ModifyResponse = func(resp *http.Response) error {
		if org, ok := importOrg(resp.Request); ok {
			f.mu.Lock()
			f.answers = append(f.answers, answer{at: time.Now(), org: org, status: resp.StatusCode})
			f.mu.Unlock()
		}
		return nil
	}
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		// The worker went away (killed) or the fake aborted: no answer.
		w.WriteHeader(http.StatusBadGateway)
	}
	front := httptest.NewServer(rp)
	t.Cleanup(front.Close)
	f.URL = front.URL + versoritest.DefaultPrefix
	return f
}

// post calls one of the fake's control endpoints.
func (f *fakeAPI) post(path string) {
	f.t.Helper()
	resp, err := http.Post(f.admin+path, "", nil)
	if err != nil {
		f.t.Fatalf("fakeapi %s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		f.t.Fatalf("fakeapi %s: %s %s", path, resp.Status, b)
	}
}

func (f *fakeAPI) getJSON(path string, v any) {
	f.t.Helper()
	resp, err := http.Get(f.admin + path)
	if err != nil {
		f.t.Fatalf("fakeapi %s: %v", path, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		f.t.Fatalf("fakeapi %s: %v", path, err)
	}
}

// stats returns the fake's own counters (/_stats).
func (f *fakeAPI) stats() versoritest.Stats {
	var st versoritest.Stats
	f.getJSON("/_stats", &st)
	return st
}

// orgCalls are the fake's counters of one organisation (/_calls).
type orgCalls struct {
	Calls     int `json:"calls"`
	Imports   int `json:"imports"`
	Conflicts int `json:"conflicts"`
}

func (f *fakeAPI) callsOf(org string) orgCalls {
	var c orgCalls
	f.getJSON("/_calls?org="+org, &c)
	return c
}

// accepted returns the times of the answers that did the work or found it
// done (200 and 409), in order.
func (f *fakeAPI) accepted() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for _, a := range f.answers {
		if a.status == 200 || a.status == 409 {
			out = append(out, a.at)
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// acceptedBetween counts the accepted answers in [from, until].
func acceptedBetween(times []time.Time, from, until time.Time) int {
	n := 0
	for _, ts := range times {
		if !ts.Before(from) && !ts.After(until) {
			n++
		}
	}
	return n
}

// longestGap returns the longest time between consecutive accepted answers
// (or between from and the first one) that ends after from and starts
// before until, and when it started.
func longestGap(times []time.Time, from, until time.Time) (time.Duration, time.Time) {
	var gap time.Duration
	var at time.Time
	prev := from
	for _, ts := range times {
		if !ts.After(from) {
			prev = ts
			continue
		}
		if prev.After(until) {
			break
		}
		if d := ts.Sub(prev); d > gap {
			gap, at = d, prev
		}
		prev = ts
	}
	return gap, at
}

// cli runs the enqueue binary against one Redis URL, given by --redis-url.
type cli struct {
	t   *testing.T
	bin string
	url string
}

func newCLI(t *testing.T, redisURL string) *cli {
	return &cli{t: t, bin: e2etest.Bin(t, "enqueue"), url: redisURL}
}

func (c *cli) run(timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return e2etest.Run(ctx, c.bin, nil, nil, append([]string{"--redis-url", c.url}, args...)...)
}

// enqueue enqueues the organisations of the file as rollout id and checks
// the answer.
func (c *cli) enqueue(id, orgsFile string, n int) {
	c.t.Helper()
	out, errOut, code := c.run(time.Minute, "--connector", connectorID, "--version", "1.0.0", "--orgs", orgsFile, "--rollout", id, "--json")
	if code != 0 {
		c.t.Fatalf("enqueue: exit %d\n%s", code, errOut)
	}
	var r struct {
		Enqueued int `json:"enqueued"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Enqueued != n {
		c.t.Fatalf("enqueue: want %d enqueued, got %s (%v)", n, out, err)
	}
}

// rolloutStatus is the part of `enqueue status --json` the tests read.
type rolloutStatus struct {
	RolloutID string           `json:"rollout_id"`
	Total     int64            `json:"total"`
	Pending   int64            `json:"pending"`
	Succeeded int64            `json:"succeeded"`
	Failed    int64            `json:"failed"`
	Cancelled int64            `json:"cancelled"`
	Retrying  int64            `json:"retrying"`
	Done      bool             `json:"done"`
	ByClass   map[string]int64 `json:"by_class"`
}

// status runs `enqueue status ID --json`; an error when the CLI fails (as
// it may while Redis fails over).
func (c *cli) status(id string) (rolloutStatus, error) {
	out, errOut, code := c.run(20*time.Second, "status", id, "--json")
	var s rolloutStatus
	if code != 0 {
		return s, fmt.Errorf("exit %d: %s", code, strings.TrimSpace(errOut))
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return s, fmt.Errorf("status output: %v: %s", err, out)
	}
	return s, nil
}

// waitStatus polls the status until cond holds, and returns it, or fails
// the test after timeout. CLI errors on the way are counted, not fatal.
func (c *cli) waitStatus(id string, timeout time.Duration, what string, cond func(rolloutStatus) bool) (rolloutStatus, int) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	errs := 0
	var last rolloutStatus
	var lastErr error
	for {
		s, err := c.status(id)
		if err == nil {
			last = s
			if cond(s) {
				return s, errs
			}
		} else {
			errs++
			lastErr = err
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("rollout %s: not %s after %s: last status %+v, %d CLI errors (last: %v)", id, what, timeout, last, errs, lastErr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// reportRow is one row of `enqueue report --format json`.
type reportRow struct {
	OrgID    string `json:"org_id"`
	State    string `json:"state"`
	Class    string `json:"class"`
	Attempts int    `json:"attempts"`
}

func (c *cli) report(id string) []reportRow {
	c.t.Helper()
	out, errOut, code := c.run(time.Minute, "report", id, "--format", "json")
	if code != 0 {
		c.t.Fatalf("report: exit %d\n%s", code, errOut)
	}
	var rows []reportRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		c.t.Fatalf("report output: %v", err)
	}
	return rows
}

// writeOrgList writes the first n organisations of orgIDs to a file, one a
// line.
func writeOrgList(t *testing.T, n int) (string, []string) {
	t.Helper()
	var orgs []string
	for org := range orgIDs(n) {
		orgs = append(orgs, org)
	}
	path := filepath.Join(t.TempDir(), "orgs.txt")
	if err := os.WriteFile(path, []byte(strings.Join(orgs, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, orgs
}

// outcome is what the end of a rollout looked like from outside.
type outcome struct {
	status    rolloutStatus
	repeated  int   // organisations called again after their import (the fake's 409s)
	conflicts int64 // the fake's 409s
}

// checkRollout checks, from the CLI and the fake's counters, that every
// organisation of the rollout succeeded and is recorded once, that the fake
// imported into each exactly once, and that the 409s the fake answered are
// the ledger's already_present. It returns the final status and the number
// of organisations called again after their import.
func checkRollout(t *testing.T, c *cli, api *fakeAPI, id string, orgs []string) outcome {
	t.Helper()
	n := int64(len(orgs))
	s, err := c.status(id)
	if err != nil {
		t.Fatalf("final status: %v", err)
	}
	if s.Total != n || s.Succeeded != n || s.Failed != 0 || s.Pending != 0 || !s.Done {
		t.Errorf("final status %+v: want total = succeeded = %d, nothing failed or pending, done", s, n)
	}
	if got := s.ByClass["imported"] + s.ByClass["already_present"]; got != n {
		t.Errorf("imported + already_present = %d, want %d (%v)", got, n, s.ByClass)
	}
	rows := c.report(id)
	seen := map[string]int{}
	for _, r := range rows {
		seen[r.OrgID]++
		if r.State != "succeeded" {
			t.Errorf("report: %s is %s (%s), want succeeded", r.OrgID, r.State, r.Class)
		}
	}
	if len(rows) != len(orgs) {
		t.Errorf("report has %d rows for %d organisations", len(rows), len(orgs))
	}
	bad := 0
	repeated := 0
	for _, org := range orgs {
		if seen[org] != 1 {
			bad++
			if bad <= 5 {
				t.Errorf("report: organisation %s has %d rows, want 1", org, seen[org])
			}
		}
		k := api.callsOf(org)
		if k.Imports != 1 {
			bad++
			if bad <= 5 {
				t.Errorf("fake: organisation %s imported %d times, want 1", org, k.Imports)
			}
		}
		if k.Conflicts > 0 {
			repeated++
		}
	}
	st := api.stats()
	if st.Imports != n {
		t.Errorf("the fake carried out %d imports for %d organisations", st.Imports, n)
	}
	// already_present is recorded only when a 409 was the first answer the
	// ledger kept: a 409 after a recorded import (a task whose end a failover
	// lost) leaves the record imported. So the fake's 409s bound it.
	if ap := s.ByClass["already_present"]; ap > st.Conflicts || ap > int64(repeated) {
		t.Errorf("the ledger records %d already_present, but the fake answered %d conflicts (409) to %d organisations", ap, st.Conflicts, repeated)
	}
	return outcome{status: s, repeated: repeated, conflicts: st.Conflicts}
}

var (
	logIDs  = regexp.MustCompile(`id=\S+|[0-9A-HJKMNP-TV-Z]{26}|\d+(\.\d+)?(ms|s)\b|127\.0\.0\.1:\d+`)
	logKeep = 6
)

// logSummary counts the worker's log lines by message, with IDs, times and
// addresses blanked, and returns the most frequent ones, for the test log.
func logSummary(logs string) string {
	counts := map[string]int{}
	for _, line := range strings.Split(logs, "\n") {
		var m struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Err   string `json:"err"`
		}
		if json.Unmarshal([]byte(line), &m) != nil || m.Msg == "" {
			if strings.TrimSpace(line) != "" {
				counts["(text) "+logIDs.ReplaceAllString(line, "_")]++
			}
			continue
		}
		key := m.Level + " " + m.Msg
		if m.Err != "" {
			key += ": " + m.Err
		}
		counts[logIDs.ReplaceAllString(key, "_")]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return counts[b] - counts[a] })
	var out []string
	for i, k := range keys {
		if i == logKeep {
			out = append(out, fmt.Sprintf("... %d more kinds", len(keys)-logKeep))
			break
		}
		out = append(out, fmt.Sprintf("%d x %s", counts[k], k))
	}
	return strings.Join(out, "\n")
}
