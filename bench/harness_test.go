package bench

import (
	"context"
	"fmt"
	"iter"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/internal/e2etest"
	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

// The rollout every figure imports.
const (
	connectorID = "01HZY0000000000000000C0NN0"
	version     = "1.0.0"
	queue       = tasks.DefaultQueue
)

// orgIDs yields n distinct organisation ULIDs, the same n for every run.
func orgIDs(n int) iter.Seq[string] {
	return func(yield func(string) bool) {
		for i := range n {
			var id ulid.ULID
			id[0] = 0x01
			id[12], id[13], id[14], id[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
			if !yield(id.String()) {
				return
			}
		}
	}
}

// parsedIDs is orgIDs parsed, as a producer takes them.
func parsedIDs(n int) iter.Seq[versori.OrgID] {
	return func(yield func(versori.OrgID) bool) {
		for s := range orgIDs(n) {
			if !yield(versori.MustParseOrgID(s)) {
				return
			}
		}
	}
}

// fakeAPI is a versoritest fake served behind a recorder of when each
// import call was answered 200, so a figure can tell successful calls (the
// rate of progress) from calls answered 503 or 429 (the rate the API sees,
// which the fake itself records).
type fakeAPI struct {
	*versoritest.Server
	// URL is the base URL for VERSORI_BASE_URL.
	URL string

	srv  *http.Server
	mu   sync.Mutex
	oks  []time.Time
	stop sync.Once
}

func newFakeAPI(tb testing.TB, opts ...versoritest.Option) *fakeAPI {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	f := &fakeAPI{Server: versoritest.NewUnstartedServer(opts...), URL: "http://" + ln.Addr().String() + versoritest.DefaultPrefix}
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = f.srv.Serve(ln) }()
	tb.Cleanup(f.Close)
	return f
}

// Close stops the fake. Safe to call twice.
func (f *fakeAPI) Close() {
	f.stop.Do(func() {
		f.Server.Close()
		_ = f.srv.Close()
	})
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	f.Server.ServeHTTP(sw, r)
	if r.Method == http.MethodPost && (sw.status == http.StatusOK || sw.status == 0 && sw.wrote) {
		now := time.Now()
		f.mu.Lock()
		f.oks = append(f.oks, now)
		f.mu.Unlock()
	}
}

// OKTimes returns when each import call answered 200, in order.
func (f *fakeAPI) OKTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]time.Time(nil), f.oks...)
	// Handlers finish concurrently, so appends can land slightly out of
	// order.
	slices.SortFunc(out, time.Time.Compare)
	return out
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// suite holds what the figures share: the binaries, built once, and the
// table of results.
type suite struct {
	t     *testing.T
	dir   string
	table Table

	baselineBin string
	// noise holds the host's timer lateness during each figure.
	noise []string
}

// figure runs fn as the subtest name with a Probe watching the host.
func (s *suite) figure(name string, fn func(*testing.T)) {
	s.t.Run(name, func(t *testing.T) {
		p := StartProbe(5 * time.Millisecond)
		defer func() {
			l := p.Stop()
			s.noise = append(s.noise, fmt.Sprintf("%s: %s", name, l))
			t.Logf("host noise during %s: %s", name, l)
		}()
		fn(t)
	})
}

func moduleRoot(tb testing.TB) string {
	tb.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		tb.Fatal("cannot locate the module root")
	}
	root, err := filepath.Abs(filepath.Join(filepath.Dir(file), ".."))
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

// goBuild builds the package at pkg (relative to the module root) into the
// suite's directory.
func (s *suite) goBuild(tb testing.TB, pkg string) (string, error) {
	out := filepath.Join(s.dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "./"+pkg)
	cmd.Dir = moduleRoot(tb)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./%s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

func (s *suite) worker(tb testing.TB) string { return e2etest.Bin(tb, "worker") }

func (s *suite) baseline(tb testing.TB) string {
	tb.Helper()
	if s.baselineBin == "" {
		bin, err := s.goBuild(tb, "bench/cmd/baselineworker")
		if err != nil {
			tb.Fatal(err)
		}
		s.baselineBin = bin
	}
	return s.baselineBin
}

// add records a row and logs it, so a figure run alone shows its numbers
// even when the run is cut short.
func (s *suite) add(tb testing.TB, r Row) {
	tb.Helper()
	s.table.Add(r)
	tb.Logf("FIGURE %s | %s: %s (baseline %s, target %s) %s", r.Figure, r.Metric, r.Value, dash(r.Baseline), dash(r.Target), r.Mark)
}

// procs starts n processes of bin, each with the Redis, the fake and the
// common variables, plus extra.
func startProcs(tb testing.TB, bin string, n int, red *redistest.Server, api *fakeAPI, extra map[string]string) []*e2etest.Process {
	tb.Helper()
	var ps []*e2etest.Process
	for i := range n {
		env := map[string]string{
			"REDIS_URL":        red.URL(),
			"VERSORI_BASE_URL": api.URL,
			"VERSORI_API_KEY":  api.APIKey(),
		}
		for k, v := range extra {
			env[k] = v
		}
		ps = append(ps, e2etest.StartWorker(tb, e2etest.WorkerOptions{Bin: bin, Env: env, Name: fmt.Sprintf("%s-%d", filepath.Base(bin), i)}))
	}
	return ps
}

// scrapeSum sums a metric over the workers' /metrics.
func scrapeSum(tb testing.TB, ps []*e2etest.Process, name string) float64 {
	tb.Helper()
	var sum float64
	for _, p := range ps {
		text, err := p.Scrape()
		if err != nil {
			tb.Logf("scrape %s: %v", p.Name, err)
			continue
		}
		v, _ := e2etest.MetricSum(text, name)
		sum += v
	}
	return sum
}

// stopProcs stops the processes gracefully, all at once.
func stopProcs(tb testing.TB, ps []*e2etest.Process) {
	tb.Helper()
	for _, p := range ps {
		p.Signal(os.Interrupt)
	}
	for _, p := range ps {
		if code := p.Wait(60 * time.Second); code != 0 {
			tb.Logf("%s exited with %d; last lines:\n%s", p.Name, code, lastLines(p.Logs(), 10))
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// enqueue enqueues n organisations for rollout id through the producer API.
func enqueue(tb testing.TB, rdb redis.UniversalClient, id string, n int) {
	tb.Helper()
	p := tasks.NewProducer(rdb, tasks.ProducerConfig{})
	s, err := p.EnqueueAll(context.Background(), tasks.Rollout{ID: id, ConnectorID: connectorID, Version: version}, parsedIDs(n), nil)
	if err != nil {
		tb.Fatal(err)
	}
	if s.Enqueued != n {
		tb.Fatalf("enqueued %d of %d", s.Enqueued, n)
	}
}

// enlist writes a rollout of n organisations as enqueue does: ledger
// records and a backlog, which a worker's releaser turns into asynq tasks.
func enlist(tb testing.TB, rdb redis.UniversalClient, id string, n int) {
	tb.Helper()
	m := rollout.New(rdb, rollout.Options{})
	spec := rollout.Spec{ID: id, ConnectorID: connectorID, Version: version}
	if _, _, err := m.Create(context.Background(), spec); err != nil {
		tb.Fatal(err)
	}
	s, err := m.EnqueueIDs(context.Background(), spec, parsedIDs(n), nil)
	if err != nil {
		tb.Fatal(err)
	}
	if s.Enqueued != n {
		tb.Fatalf("enlisted %d of %d", s.Enqueued, n)
	}
}

// waitFor polls cond every step until it holds or timeout passes.
func waitFor(timeout, step time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(step)
	}
	return true
}

// rolloutDone returns a condition true once the ledger holds no pending
// organisation of the rollout; it keeps the last counts read in *c.
func rolloutDone(rdb redis.UniversalClient, id string, c *ledger.Counts) func() bool {
	led := ledger.New(rdb, ledger.Options{})
	return func() bool {
		_, counts, err := led.Rollout(context.Background(), id)
		if err != nil {
			return false
		}
		*c = counts
		return counts.Done()
	}
}

// queueEmpty returns a condition true once the queue holds no task in any
// state but completed or archived.
func queueEmpty(rdb redis.UniversalClient) func() bool {
	in := asynq.NewInspectorFromRedisClient(rdb)
	return func() bool {
		qi, err := in.GetQueueInfo(queue)
		return err == nil && qi.Pending+qi.Active+qi.Scheduled+qi.Retry == 0
	}
}

// commandStats reads INFO commandstats.
func commandStats(tb testing.TB, red *redistest.Server) CommandCounts {
	tb.Helper()
	m, err := red.CommandStats(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// resetRedis empties the server and zeroes its command statistics.
func resetRedis(tb testing.TB, rdb *redis.Client) {
	tb.Helper()
	ctx := context.Background()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		tb.Fatal(err)
	}
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		tb.Fatal(err)
	}
}

// benchCommands are the commands the benchmark itself sends to Redis, left
// out of per-organisation counts.
var benchCommands = []string{"info", "config|resetstat", "flushall", "ping", "hello", "client|setinfo", "client|setname"}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
