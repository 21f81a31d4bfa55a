package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/apitoken"
	"github.com/versori/import-worker/internal/e2etest"
	"github.com/versori/import-worker/internal/openapitest"
	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/versori/versoritest"
)

const callbackSecret = "e2e-callback-secret-0123456789abcdef"

// curl runs curl with args and returns the status code, the response
// headers and the body; every answer is checked against the OpenAPI
// document.
type curlClient struct {
	t    *testing.T
	base string
	v    *openapitest.Validator
	dir  string
}

func (c *curlClient) do(method, path, token string, headers map[string]string, body string) (int, http.Header, []byte) {
	c.t.Helper()
	hdrFile := filepath.Join(c.dir, "headers")
	args := []string{"-sS", "-X", method, "-D", hdrFile, "-o", "-", "--max-time", "60"}
	reqHeader := http.Header{}
	if token != "" {
		args = append(args, "-H", "Authorization: Bearer "+token)
	}
	for k, v := range headers {
		args = append(args, "-H", k+": "+v)
		reqHeader.Set(k, v)
	}
	if body != "" {
		bodyFile := filepath.Join(c.dir, "body")
		if err := os.WriteFile(bodyFile, []byte(body), 0o600); err != nil {
			c.t.Fatal(err)
		}
		args = append(args, "--data-binary", "@"+bodyFile)
	}
	args = append(args, c.base+path)
	out, err := exec.Command("curl", args...).Output()
	if err != nil {
		c.t.Fatalf("curl %s %s: %v", method, path, err)
	}
	raw, err := os.ReadFile(hdrFile)
	if err != nil {
		c.t.Fatal(err)
	}
	code, hdr := parseHeaders(c.t, string(raw))
	if err := c.v.Check(method, path, reqHeader, code, hdr, out); err != nil {
		c.t.Errorf("OpenAPI: %v", err)
	}
	return code, hdr, out
}

func parseHeaders(t *testing.T, raw string) (int, http.Header) {
	t.Helper()
	lines := strings.Split(strings.ReplaceAll(raw, "\r\n", "\n"), "\n")
	f := strings.Fields(lines[0])
	if len(f) < 2 {
		t.Fatalf("bad status line %q", lines[0])
	}
	code, _ := strconv.Atoi(f[1])
	h := http.Header{}
	for _, l := range lines[1:] {
		if k, v, ok := strings.Cut(l, ":"); ok {
			h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	return code, h
}

// TestAPIEndToEnd drives a rollout from outside Go: curl against the real
// cmd/api binary, two cmd/worker processes, a real redis-server, the fake
// Versori API and a callback receiver that answers 500 twice before 200.
// Create, re-create (200), status, report as NDJSON and CSV, retry, and the
// signed callback, every answer validated against the OpenAPI document.
func TestAPIEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed: this test drives the API from outside Go with curl (apt-get install curl)")
	}
	doc, err := os.ReadFile("../cmd/api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	v := openapitest.New(t, doc)

	rs := redistest.Start(t, redistest.Options{})
	api := versoritest.NewServer()
	t.Cleanup(api.Close)

	type delivery struct {
		id, sig string
		body    []byte
	}
	var (
		mu         sync.Mutex
		attempts   int
		deliveries []delivery
	)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts <= 2 {
			http.Error(w, "not yet", 500)
			return
		}
		deliveries = append(deliveries, delivery{r.Header.Get("X-Delivery-ID"), r.Header.Get("X-Signature-256"), body})
	}))
	defer recv.Close()
	recvURL, _ := url.Parse(recv.URL)

	// Tokens.
	dir := t.TempDir()
	opTok, _ := apitoken.Generate()
	rdTok, _ := apitoken.Generate()
	tokFile := filepath.Join(dir, "tokens")
	os.WriteFile(tokFile, []byte("# e2e\n"+apitoken.Line(apitoken.Operator, opTok, "e2e-op")+"\n"+apitoken.Line(apitoken.Reader, rdTok, "e2e-ro")+"\n"), 0o600)

	workerBin := e2etest.Bin(t, "worker")
	for i := range 2 {
		e2etest.StartWorker(t, e2etest.WorkerOptions{Bin: workerBin, Name: fmt.Sprintf("worker-%d", i), Env: map[string]string{
			"REDIS_URL": rs.URL(), "VERSORI_BASE_URL": api.URL, "VERSORI_API_KEY": api.APIKey(), "LOG_LEVEL": "warn",
			"IMPORT_RATE_LIMIT": "200", "RETRY_BACKOFF_BASE": "100ms", "RETRY_BACKOFF_CAP": "300ms",
			"CALLBACK_SECRET": callbackSecret, "CALLBACK_ALLOWED_HOSTS": recvURL.Host,
		}})
	}
	addr := e2etest.FreeAddr(t)
	e2etest.StartWorker(t, e2etest.WorkerOptions{Bin: e2etest.Bin(t, "api"), Name: "api", Env: map[string]string{
		"REDIS_URL": rs.URL(), "API_ADDR": addr, "METRICS_ADDR": addr, "API_TOKENS_FILE": tokFile,
		"CALLBACK_ALLOWED_HOSTS": recvURL.Host,
	}})
	c := &curlClient{t: t, base: "http://" + addr, v: v, dir: dir}
	jsonH := map[string]string{"Content-Type": "application/json"}

	// Three organisations fail for good (404) on the first pass.
	const n = 60
	orgs := slices.Collect(orgIDs(n))
	for _, o := range orgs[:3] {
		api.SetFault(o, versoritest.Fault{Kind: versoritest.FaultNotFound})
	}

	// Create, the first half as JSON.
	create := map[string]any{"rollout_id": "e2e-api", "connector_id": strings.ToLower(connectorID), "version": "1.0.0",
		"organisations": orgs[:n/2], "callback_url": recv.URL + "/hooks/rollout"}
	b, _ := json.Marshal(create)
	code, hdr, body := c.do("POST", "/v1/rollouts", opTok, jsonH, string(b))
	if code != 201 || hdr.Get("Location") != "/v1/rollouts/e2e-api" {
		t.Fatalf("create: %d %s", code, body)
	}
	// Re-create with the whole list as NDJSON: only the rest is enqueued.
	var nd strings.Builder
	for _, o := range orgs {
		fmt.Fprintf(&nd, "%q\n", o)
	}
	code, _, body = c.do("POST", "/v1/rollouts?rollout_id=e2e-api&connector_id="+connectorID+"&version=1.0.0", opTok,
		map[string]string{"Content-Type": "application/x-ndjson"}, nd.String())
	var res rollout.Result
	json.Unmarshal(body, &res)
	if code != 200 || res.Enqueued != n/2 || res.AlreadyEnqueued != n/2 {
		t.Fatalf("re-create: %d %s", code, body)
	}
	// A reader may not create.
	if code, _, _ := c.do("POST", "/v1/rollouts", rdTok, jsonH, string(b)); code != 403 {
		t.Fatalf("reader create: %d", code)
	}

	// Status until done.
	var st rollout.Status
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, _, body = c.do("GET", "/v1/rollouts/e2e-api", rdTok, nil, "")
		if code != 200 {
			t.Fatalf("status: %d %s", code, body)
		}
		json.Unmarshal(body, &st)
		if st.Done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not done: %s", body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st.Total != n || st.Succeeded != n-3 || st.Failed != 3 {
		t.Fatalf("status: %+v", st)
	}

	// Report: NDJSON (the default) and CSV.
	code, hdr, body = c.do("GET", "/v1/rollouts/e2e-api/organisations", rdTok, nil, "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/x-ndjson") || strings.Count(string(body), "\n") != n {
		t.Fatalf("report ndjson: %d %s", code, body)
	}
	code, hdr, body = c.do("GET", "/v1/rollouts/e2e-api/organisations?state=failed", rdTok, map[string]string{"Accept": "text/csv"}, "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") {
		t.Fatalf("report csv: %d %s", code, body)
	}
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "org_id,state,class,http_status,attempts,error,version") || !strings.Contains(lines[1], ",failed,not_found,404,") {
		t.Fatalf("report csv: %s", body)
	}

	// The callback: signed, delivered once after two 500s.
	deadline = time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := len(deliveries)
		mu.Unlock()
		if got > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no callback delivered (%d attempts)", attempts)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Retry the failures once the API accepts them.
	for _, o := range orgs[:3] {
		api.SetFault(o, versoritest.Fault{})
	}
	code, _, body = c.do("POST", "/v1/rollouts/e2e-api/retry", opTok, jsonH, `{"classes":["not_found"]}`)
	var rr rollout.RetryResult
	json.Unmarshal(body, &rr)
	if code != 200 || rr.Requeued != 3 {
		t.Fatalf("retry: %d %s", code, body)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		_, _, body = c.do("GET", "/v1/rollouts/e2e-api", rdTok, nil, "")
		json.Unmarshal(body, &st)
		if st.Done && st.Succeeded == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retry not done: %s", body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The re-driven rollout is called back again once it is done again:
	// a second round, with its own delivery ID.
	deadline = time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := len(deliveries)
		mu.Unlock()
		if got >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // room for a third delivery, which must not come

	mu.Lock()
	defer mu.Unlock()
	if len(deliveries) != 2 || attempts != 4 {
		t.Fatalf("deliveries %d after %d attempts; want 2 (one a round) after 4", len(deliveries), attempts)
	}
	var again rollout.Status
	if err := json.Unmarshal(deliveries[1].body, &again); err != nil || !again.Done || again.Succeeded != n || deliveries[1].id == deliveries[0].id ||
		!rollout.Verify([]byte(callbackSecret), deliveries[1].body, deliveries[1].sig) {
		t.Fatalf("second round: id %q (first %q), body %s, %v", deliveries[1].id, deliveries[0].id, deliveries[1].body, err)
	}
	d := deliveries[0]
	if !rollout.Verify([]byte(callbackSecret), d.body, d.sig) || !strings.HasPrefix(d.sig, "sha256=") || d.id == "" {
		t.Fatalf("callback signature %q or delivery ID %q wrong", d.sig, d.id)
	}
	var cb rollout.Status
	if err := json.Unmarshal(d.body, &cb); err != nil || cb.RolloutID != "e2e-api" || !cb.Done || cb.Total != n || cb.Failed != 3 {
		t.Fatalf("callback body %s: %v", d.body, err)
	}
	// The callback body is the status object of the OpenAPI document.
	if err := v.Doc.Components.Schemas["Status"].Value.VisitJSON(mustAny(d.body)); err != nil {
		t.Errorf("callback body against Status: %v", err)
	}
}

func mustAny(b []byte) any {
	var v any
	json.Unmarshal(b, &v)
	return v
}
