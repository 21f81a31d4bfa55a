package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/versori/import-worker/internal/apitoken"
	"github.com/versori/import-worker/internal/openapitest"
	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/rollout"
)

const (
	operatorToken = "vit_operator-token-for-tests"
	readerToken   = "vit_reader-token-for-tests"
	connector     = "01HZY3K8W0V6Q1B2C3D4E5F6G7"
)

func org(i int) string { return fmt.Sprintf("01J%023d", i) }

type harness struct {
	t     *testing.T
	redis *redistest.Server
	srv   *httptest.Server
	m     *rollout.Manager
	v     *openapitest.Validator
	log   *bytes.Buffer
	reg   *prometheus.Registry
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	rs := redistest.Start(t, redistest.Options{})
	rdb := rs.Client()
	m := rollout.New(rdb, rollout.Options{})
	es, err := apitoken.Parse(strings.NewReader(apitoken.Line(apitoken.Operator, operatorToken, "ops") + "\n" + apitoken.Line(apitoken.Reader, readerToken, "dash") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	allowed, _ := rollout.ParseAllowedHosts("hooks.example.com,127.0.0.1:9")
	var logBuf bytes.Buffer
	reg := prometheus.NewRegistry()
	h := newServer(serverConfig{
		Manager: m, Tokens: apitoken.NewSet(es), Allowed: allowed,
		Logger: slog.New(slog.NewJSONHandler(&logBuf, nil)), Registry: reg, Build: metrics.BuildInfo{Version: "test"},
		RatePerToken: 1000, BurstPerToken: 1000,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &harness{t: t, redis: rs, srv: srv, m: m, v: openapitest.New(t, openAPIDoc), log: &logBuf, reg: reg}
}

// do sends a request and checks the answer against the OpenAPI document.
func (h *harness) do(method, path, token, ctype string, body io.Reader, hdr ...string) (int, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, b := h.v.Do(h.t, http.DefaultClient, req)
	return resp.StatusCode, b
}

func (h *harness) create(body any) (int, []byte) {
	b, _ := json.Marshal(body)
	return h.do("POST", "/v1/rollouts", operatorToken, "application/json", bytes.NewReader(b))
}

func errorOf(t *testing.T, b []byte) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
		t.Fatalf("not an error object: %s", b)
	}
	return e.Error
}

func TestOpenAPIDocument(t *testing.T) {
	h := newHarness(t)
	code, b := h.do("GET", "/v1/openapi.json", readerToken, "", nil)
	if code != 200 || !bytes.Equal(b, openAPIDoc) {
		t.Fatalf("GET /v1/openapi.json: %d", code)
	}
	// Every route the server has is in the document.
	for _, p := range []string{"/v1/rollouts", "/v1/rollouts/{id}", "/v1/rollouts/{id}/organisations", "/v1/rollouts/{id}/retry",
		"/v1/rollouts/{id}/cancel", "/v1/rollouts/{id}/promote", "/v1/queue/pause", "/v1/queue/resume", "/v1/openapi.json", "/healthz", "/readyz", "/metrics"} {
		if h.v.Doc.Paths.Find(p) == nil {
			t.Errorf("path %s is not documented", p)
		}
	}
}

func TestCreateStatusReport(t *testing.T) {
	h := newHarness(t)
	orgs := []string{org(1), strings.ToLower(org(2)), org(2), org(3)}
	code, b := h.create(map[string]any{"rollout_id": "r1", "connector_id": strings.ToLower(connector), "version": "1.0.0", "organisations": orgs})
	if code != 201 {
		t.Fatalf("create: %d %s", code, b)
	}
	var res rollout.Result
	json.Unmarshal(b, &res)
	if res.Enqueued != 3 || res.Duplicates != 1 || res.RolloutID != "r1" || res.ConnectorID != connector {
		t.Fatalf("create: %+v", res)
	}
	code, b = h.create(map[string]any{"rollout_id": "r1", "connector_id": connector, "version": "1.0.0", "organisations": append(orgs, org(4))})
	json.Unmarshal(b, &res)
	if code != 200 || res.Enqueued != 1 || res.AlreadyEnqueued != 3 {
		t.Fatalf("re-create: %d %s", code, b)
	}
	code, b = h.do("GET", "/v1/rollouts/r1", readerToken, "", nil)
	var st rollout.Status
	json.Unmarshal(b, &st)
	if code != 200 || st.Total != 4 || st.Pending != 4 || st.Done {
		t.Fatalf("status: %d %s", code, b)
	}
	code, b = h.do("GET", "/v1/rollouts/r1/organisations?state=pending", readerToken, "", nil)
	if code != 200 || strings.Count(string(b), "\n") != 4 {
		t.Fatalf("report ndjson: %d %s", code, b)
	}
	code, b = h.do("GET", "/v1/rollouts/r1/organisations", readerToken, "", nil, "Accept", "text/csv")
	if code != 200 || !strings.HasPrefix(string(b), "org_id,state,class") || strings.Count(string(b), "\n") != 5 {
		t.Fatalf("report csv: %d %s", code, b)
	}
	code, b = h.do("GET", "/v1/rollouts/r1/organisations", readerToken, "", nil, "Accept", "application/xml")
	if code != 406 {
		t.Fatalf("Accept xml: %d %s", code, b)
	}
	code, b = h.do("GET", "/v1/rollouts", readerToken, "", nil)
	if code != 200 || !strings.Contains(string(b), `"rollout_id":"r1"`) {
		t.Fatalf("list: %d %s", code, b)
	}
	code, b = h.do("POST", "/v1/rollouts/r1/retry", operatorToken, "application/json", strings.NewReader(`{"classes":["server_error"]}`))
	if code != 200 || !strings.Contains(string(b), `"requeued":0`) {
		t.Fatalf("retry: %d %s", code, b)
	}
	code, b = h.do("POST", "/v1/rollouts/r1/retry", operatorToken, "application/json", strings.NewReader(`{"classes":["bogus"]}`))
	if code != 422 {
		t.Fatalf("retry bogus class: %d %s", code, b)
	}
	code, b = h.do("POST", "/v1/rollouts/r1/promote", operatorToken, "", nil)
	if code != 409 {
		t.Fatalf("promote: %d %s", code, b)
	}
	code, b = h.do("POST", "/v1/queue/pause", operatorToken, "", nil)
	if code != 200 || !strings.Contains(string(b), `"paused":true`) {
		t.Fatalf("pause: %d %s", code, b)
	}
	code, b = h.do("POST", "/v1/queue/resume", operatorToken, "", nil)
	if code != 200 || !strings.Contains(string(b), `"paused":false`) {
		t.Fatalf("resume: %d %s", code, b)
	}
	// Delete: an active rollout only with force=true.
	if code, b = h.create(map[string]any{"rollout_id": "r2", "connector_id": connector, "version": "1.0.0", "organisations": orgs}); code != 201 {
		t.Fatalf("create r2: %d %s", code, b)
	}
	code, b = h.do("DELETE", "/v1/rollouts/r2", operatorToken, "", nil)
	if code != 409 || !strings.Contains(errorOf(t, b), "force=true") {
		t.Fatalf("delete active: %d %s", code, b)
	}
	if code, b = h.do("DELETE", "/v1/rollouts/r2?force=maybe", operatorToken, "", nil); code != 400 {
		t.Fatalf("delete force=maybe: %d %s", code, b)
	}
	code, b = h.do("DELETE", "/v1/rollouts/r2?force=true", operatorToken, "", nil)
	var del rollout.RemoveResult
	json.Unmarshal(b, &del)
	if code != 200 || !del.Deleted || del.Cancelled != 3 {
		t.Fatalf("delete --force: %d %s", code, b)
	}
	code, b = h.do("POST", "/v1/rollouts/r1/cancel", operatorToken, "", nil)
	json.Unmarshal(b, &st)
	if code != 200 || st.Cancelled != 4 || !st.Done || st.ExpiresAt == nil || st.RetentionSeconds != int64(rollout.DefaultRetention/time.Second) {
		t.Fatalf("cancel: %d %s", code, b)
	}
	code, b = h.do("DELETE", "/v1/rollouts/r1", operatorToken, "", nil)
	if code != 200 {
		t.Fatalf("delete: %d %s", code, b)
	}
	if code, _ = h.do("GET", "/v1/rollouts/r1", readerToken, "", nil); code != 404 {
		t.Fatalf("status after delete: %d", code)
	}
	// The access log names the token, never the token itself.
	if strings.Contains(h.log.String(), operatorToken) || !strings.Contains(h.log.String(), `"token":"ops"`) {
		t.Errorf("access log: %s", h.log.String())
	}
}

func TestCreateNDJSONAndCSV(t *testing.T) {
	h := newHarness(t)
	var nd strings.Builder
	for i := range 1000 {
		if i%2 == 0 {
			fmt.Fprintf(&nd, "%q\n", org(i))
		} else {
			fmt.Fprintf(&nd, "{\"organisation_id\":%q}\n\n", org(i))
		}
	}
	code, b := h.do("POST", "/v1/rollouts?rollout_id=nd&connector_id="+connector+"&version=latest", operatorToken, "application/x-ndjson", strings.NewReader(nd.String()))
	if code != 201 || !strings.Contains(string(b), `"enqueued":1000`) {
		t.Fatalf("ndjson: %d %s", code, b)
	}
	csv := "name,organisation_id\nacme," + org(1) + "\nbeta," + org(2) + "\n"
	code, b = h.do("POST", "/v1/rollouts?rollout_id=csv&connector_id="+connector+"&version=latest", operatorToken, "text/csv", strings.NewReader(csv))
	if code != 201 || !strings.Contains(string(b), `"enqueued":2`) {
		t.Fatalf("csv: %d %s", code, b)
	}
	code, b = h.do("POST", "/v1/rollouts?rollout_id=nd2&connector_id="+connector+"&version=latest", operatorToken, "application/x-ndjson", strings.NewReader("\"bad\"\n"+fmt.Sprintf("%q\n", org(1))))
	if code != 422 || !strings.Contains(string(b), `"index":0`) {
		t.Fatalf("ndjson invalid: %d %s", code, b)
	}
}

// The bad inputs of the issue, each refused with a clear error and nothing
// written.
func TestBadInput(t *testing.T) {
	h := newHarness(t)
	good := func() map[string]any {
		return map[string]any{"connector_id": connector, "version": "1.0.0", "organisations": []string{org(1)}}
	}

	t.Run("malformed JSON", func(t *testing.T) {
		code, b := h.do("POST", "/v1/rollouts", operatorToken, "application/json", strings.NewReader(`{"connector_id": "x",`))
		if code != 400 || !strings.Contains(errorOf(t, b), "malformed JSON") {
			t.Fatalf("%d %s", code, b)
		}
		code, b = h.do("POST", "/v1/rollouts", operatorToken, "application/json", strings.NewReader(`{"organisations": [}`))
		if code != 400 {
			t.Fatalf("%d %s", code, b)
		}
		code, b = h.do("POST", "/v1/rollouts", operatorToken, "application/json", strings.NewReader(`{"nope": 1}`))
		if code != 400 || !strings.Contains(errorOf(t, b), "unknown field") {
			t.Fatalf("%d %s", code, b)
		}
	})
	t.Run("wrong content type", func(t *testing.T) {
		code, b := h.do("POST", "/v1/rollouts", operatorToken, "application/xml", strings.NewReader(`<x/>`))
		if code != 415 || !strings.Contains(errorOf(t, b), "Content-Type") {
			t.Fatalf("%d %s", code, b)
		}
		code, b = h.do("POST", "/v1/rollouts", operatorToken, "", strings.NewReader(`{}`))
		if code != 415 {
			t.Fatalf("no content type: %d %s", code, b)
		}
	})
	t.Run("50 MB JSON body", func(t *testing.T) {
		var buf bytes.Buffer
		buf.WriteString(`{"connector_id":"` + connector + `","version":"1","organisations":[`)
		for buf.Len() < 50<<20 {
			buf.WriteString(`"` + org(1) + `",`)
		}
		buf.WriteString(`"` + org(1) + `"]}`)
		code, b := h.do("POST", "/v1/rollouts", operatorToken, "application/json", &buf)
		if code != 413 || !strings.Contains(errorOf(t, b), "larger than") {
			t.Fatalf("%d %.200s", code, b)
		}
		if rs, _ := h.m.List(context.Background(), 0); len(rs) != 0 {
			t.Fatalf("rollouts written: %+v", rs)
		}
	})
	t.Run("invalid ID at index 7", func(t *testing.T) {
		req := good()
		orgs := make([]string, 10)
		for i := range orgs {
			orgs[i] = org(i)
		}
		orgs[7] = "01J-not-a-ulid"
		req["organisations"], req["rollout_id"] = orgs, "bad7"
		code, b := h.create(req)
		var ans invalidAnswer
		json.Unmarshal(b, &ans)
		if code != 422 || len(ans.Invalid) != 1 || ans.Invalid[0].Index != 7 || ans.Invalid[0].ID != "01J-not-a-ulid" || ans.Invalid[0].Problem == "" {
			t.Fatalf("%d %s", code, b)
		}
		if code, _ := h.do("GET", "/v1/rollouts/bad7", readerToken, "", nil); code != 404 {
			t.Fatalf("rollout created despite invalid IDs: %d", code)
		}
		req["skip_invalid"] = true
		code, b = h.create(req)
		if code != 201 || !strings.Contains(string(b), `"enqueued":9`) || !strings.Contains(string(b), `"invalid":1`) {
			t.Fatalf("skip_invalid: %d %s", code, b)
		}
	})
	t.Run("bad fields", func(t *testing.T) {
		for name, mut := range map[string]func(map[string]any){
			"connector": func(r map[string]any) { r["connector_id"] = "nope" },
			"missing":   func(r map[string]any) { delete(r, "version") },
			"rollout":   func(r map[string]any) { r["rollout_id"] = "../x" },
			"waves":     func(r map[string]any) { r["waves"] = []string{"10", "5"} },
			"waves 0%":  func(r map[string]any) { r["waves"] = "0%" },
			"waves big": func(r map[string]any) { r["waves"] = []any{5000} },
			"bake":      func(r map[string]any) { r["waves"], r["bake"] = "1", "-1s" },
			"ratio":     func(r map[string]any) { r["waves"], r["max_failure_ratio"] = "1", 1.5 },
			"weight":    func(r map[string]any) { r["weight"] = 0 },
			"gate": func(r map[string]any) {
				r["waves"], r["gate"] = "1", map[string]any{"query": "sum(x", "condition": "< 1"}
			},
			"no waves": func(r map[string]any) { r["bake"] = "2s" },
			"empty":    func(r map[string]any) { r["organisations"] = []string{} },
		} {
			req := good()
			mut(req)
			if code, b := h.create(req); code != 422 {
				t.Errorf("%s: %d %s", name, code, b)
			}
		}
	})
	t.Run("unknown rollout", func(t *testing.T) {
		for _, p := range []string{"/v1/rollouts/nope", "/v1/rollouts/nope/organisations"} {
			code, b := h.do("GET", p, readerToken, "", nil)
			if code != 404 || !strings.Contains(errorOf(t, b), "not found") {
				t.Fatalf("%s: %d %s", p, code, b)
			}
		}
		for _, p := range []string{"/v1/rollouts/nope/retry", "/v1/rollouts/nope/cancel", "/v1/rollouts/nope/promote"} {
			if code, b := h.do("POST", p, operatorToken, "", nil); code != 404 {
				t.Fatalf("%s: %d %s", p, code, b)
			}
		}
	})
	t.Run("no token", func(t *testing.T) {
		code, b := h.do("GET", "/v1/rollouts", "", "", nil)
		if code != 401 || !strings.Contains(errorOf(t, b), "bearer token") {
			t.Fatalf("%d %s", code, b)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		code, b := h.do("GET", "/v1/rollouts", "vit_wrong", "", nil)
		if code != 401 {
			t.Fatalf("%d %s", code, b)
		}
	})
	t.Run("reader token on a mutation", func(t *testing.T) {
		b, _ := json.Marshal(good())
		code, body := h.do("POST", "/v1/rollouts", readerToken, "application/json", bytes.NewReader(b))
		if code != 403 || !strings.Contains(errorOf(t, body), "operator") {
			t.Fatalf("%d %s", code, body)
		}
		if code, _ := h.do("POST", "/v1/queue/pause", readerToken, "", nil); code != 403 {
			t.Fatalf("pause: %d", code)
		}
	})
	t.Run("callback_url to a host not allowed", func(t *testing.T) {
		for _, u := range []string{"http://169.254.169.254/latest/meta-data", "https://evil.example.com/hook", "http://127.0.0.1:8080/x", "ftp://hooks.example.com/x", "https://user:pw@hooks.example.com/"} {
			req := good()
			req["callback_url"], req["rollout_id"] = u, "cb"
			code, b := h.create(req)
			if code != 422 || !strings.Contains(errorOf(t, b), "callback_url") {
				t.Fatalf("%s: %d %s", u, code, b)
			}
		}
		if code, _ := h.do("GET", "/v1/rollouts/cb", readerToken, "", nil); code != 404 {
			t.Fatal("rollout created with a refused callback")
		}
		req := good()
		req["callback_url"], req["rollout_id"] = "https://HOOKS.example.com/rollouts?x=1", "cb"
		if code, b := h.create(req); code != 201 {
			t.Fatalf("allowed host: %d %s", code, b)
		}
	})
	t.Run("unknown route", func(t *testing.T) {
		req, _ := http.NewRequest("GET", h.srv.URL+"/v2/nothing", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("%d", resp.StatusCode)
		}
	})
}

func TestRedisUnreachable(t *testing.T) {
	h := newHarness(t)
	h.redis.Stop()
	b, _ := json.Marshal(map[string]any{"rollout_id": "down", "connector_id": connector, "version": "1", "organisations": []string{org(1)}})
	code, body := h.do("POST", "/v1/rollouts", operatorToken, "application/json", bytes.NewReader(b))
	if code != 503 || !strings.Contains(errorOf(t, body), "redis unreachable") {
		t.Fatalf("create: %d %s", code, body)
	}
	for _, p := range []string{"/v1/rollouts", "/v1/rollouts/down", "/readyz"} {
		tok := readerToken
		if p == "/readyz" {
			tok = ""
		}
		if code, body := h.do("GET", p, tok, "", nil); code != 503 {
			t.Errorf("%s: %d %s", p, code, body)
		}
	}
	h.redis.Resume()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := h.do("GET", "/readyz", "", "", nil)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz after restart: %d", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _ := h.do("GET", "/v1/rollouts/down", readerToken, "", nil); code != 404 {
		t.Fatalf("half-created: %d", code)
	}
}

func TestRateLimitPerToken(t *testing.T) {
	h := newHarness(t)
	es, _ := apitoken.Parse(strings.NewReader(apitoken.Line(apitoken.Reader, readerToken, "dash")))
	srv := httptest.NewServer(newServer(serverConfig{Manager: h.m, Tokens: apitoken.NewSet(es), Logger: slog.New(slog.DiscardHandler), RatePerToken: 1, BurstPerToken: 2}))
	defer srv.Close()
	codes := map[int]int{}
	for range 5 {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/rollouts", nil)
		req.Header.Set("Authorization", "Bearer "+readerToken)
		resp, body := h.v.Do(t, http.DefaultClient, req)
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 && (resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "requests/s")) {
			t.Errorf("429 without Retry-After or message: %s", body)
		}
	}
	if codes[200] != 2 || codes[429] != 3 {
		t.Fatalf("codes %v, want 2 x 200 then 429s", codes)
	}
}

func TestMetricsBoundedLabels(t *testing.T) {
	h := newHarness(t)
	for i := range 5 {
		h.do("GET", fmt.Sprintf("/v1/rollouts/r%d", i), readerToken, "", nil)
	}
	resp, err := http.Get(h.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s := string(b)
	if !strings.Contains(s, `versori_import_api_requests_total{code="404",method="GET",route="GET /v1/rollouts/{id}"} 5`) {
		t.Fatalf("metrics:\n%s", s)
	}
	if strings.Contains(s, "/v1/rollouts/r1") {
		t.Fatal("a path became a label")
	}
}

// Waves through the API: created with a gate, shown in the status (checked
// against the OpenAPI document), promoted once, then 409.
func TestWavesAPI(t *testing.T) {
	h := newHarness(t)
	code, b := h.create(map[string]any{"rollout_id": "w", "connector_id": connector, "version": "1.0.0",
		"organisations": []string{org(1), org(2), org(3)}, "waves": []any{1, "100%"}, "bake": "5s", "max_failure_ratio": 0.1, "weight": 2.5,
		"gate": map[string]any{"query": "sum(up)", "condition": ">= 1", "count": 2, "interval": "10s"}})
	if code != 201 {
		t.Fatalf("create: %d %s", code, b)
	}
	code, b = h.do("GET", "/v1/rollouts/w", readerToken, "", nil)
	var st rollout.Status
	json.Unmarshal(b, &st)
	if code != 200 || st.State != "running" || st.Wave != 1 || st.Waves != 2 || st.Weight != 2.5 || st.WaveDetail == nil || st.WaveDetail.MaxFailureRatio != 0.1 {
		t.Fatalf("status: %d %s", code, b)
	}
	code, b = h.do("POST", "/v1/rollouts/w/promote", operatorToken, "", nil)
	json.Unmarshal(b, &st)
	if code != 200 || st.Wave != 2 {
		t.Fatalf("promote: %d %s", code, b)
	}
	code, b = h.do("POST", "/v1/rollouts/w/promote", operatorToken, "", nil)
	if code != 409 || !strings.Contains(errorOf(t, b), "last wave") {
		t.Fatalf("promote again: %d %s", code, b)
	}
	code, b = h.do("POST", "/v1/rollouts?connector_id="+connector+"&version=1.0.0&rollout_id=nd&waves=1,100%25&bake=1s", operatorToken, "application/x-ndjson",
		strings.NewReader(`"`+org(1)+`"`+"\n"+`"`+org(2)+`"`+"\n"))
	if code != 201 {
		t.Fatalf("ndjson create with waves: %d %s", code, b)
	}
	if code, b = h.do("GET", "/v1/rollouts/nd", readerToken, "", nil); code != 200 || !strings.Contains(string(b), `"waves":2`) {
		t.Fatalf("ndjson status: %d %s", code, b)
	}
}

// A method a route does not take answers 405 as a JSON error, with Allow.
func TestMethodNotAllowedIsJSON(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct{ method, path, allow string }{
		{"PUT", "/v1/rollouts", "GET, HEAD, POST"},
		{"GET", "/v1/rollouts/r1/promote", "POST"},
		{"PATCH", "/v1/queue/pause", "POST"},
	} {
		req, _ := http.NewRequest(tc.method, h.srv.URL+tc.path, nil)
		req.Header.Set("Authorization", "Bearer "+operatorToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Allow") != tc.allow ||
			!strings.Contains(errorOf(t, b), "not allowed") {
			t.Errorf("%s %s: %d %q Allow %q: %s", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), b)
		}
	}
}
