package versoritest_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

const connector = "01J8Z3K4M5N6P7Q8R9S0T1V2W3"

func newID() string { return ulid.Make().String() }

func client(t testing.TB, s *versoritest.Server, timeout time.Duration) *versori.Client {
	t.Helper()
	cfg := s.ClientConfig()
	cfg.Timeout = timeout
	cfg.MaxConnsPerHost = 64
	c, err := versori.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func importOnce(c *versori.Client, org string) versori.Class {
	_, err := c.ImportPublicConnectorVersion(context.Background(), versori.OrgID(org), versori.ConnectorID(connector), "1.0.0")
	return versori.Classify(err)
}

// TestIdempotentUnderConcurrency: many concurrent imports of one version
// into one organisation carry it out exactly once; the rest answer 409.
func TestIdempotentUnderConcurrency(t *testing.T) {
	s := versoritest.NewServer()
	defer s.Close()
	c := client(t, s, 5*time.Second)
	org := newID()
	const n = 50
	classes := make(chan versori.Class, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { classes <- importOnce(c, org) })
	}
	wg.Wait()
	close(classes)
	count := map[versori.Class]int{}
	for cl := range classes {
		count[cl]++
	}
	if count[versori.ClassImported] != 1 || count[versori.ClassAlreadyPresent] != n-1 {
		t.Fatalf("classes %v, want 1 imported and %d already present", count, n-1)
	}
	if s.ImportsOf(org) != 1 || s.ConflictsOf(org) != n-1 || s.Calls(org) != n || s.Imports() != 1 || s.Conflicts() != n-1 || s.TotalCalls() != n {
		t.Errorf("counters: imports %d conflicts %d calls %d", s.ImportsOf(org), s.ConflictsOf(org), s.Calls(org))
	}
	if !s.Holds(org, connector, "1.0.0") || s.Holds(org, connector, "2.0.0") || s.Holds(newID(), connector, "1.0.0") {
		t.Error("Holds is wrong")
	}
	// Another organisation, or another version, is a new import.
	if importOnce(c, newID()) != versori.ClassImported {
		t.Error("a second organisation did not import")
	}
	if _, err := c.ImportPublicConnectorVersion(t.Context(), versori.OrgID(org), versori.ConnectorID(connector), "2.0.0"); err != nil {
		t.Errorf("another version: %v", err)
	}
}

// TestFaultsDoNotImport: every fault that answers with an error leaves the
// organisation untouched, so the retry imports exactly once.
func TestFaultsDoNotImport(t *testing.T) {
	for _, k := range versoritest.FaultKinds() {
		if k == versoritest.FaultSlowImport {
			continue
		}
		t.Run(string(k), func(t *testing.T) {
			s := versoritest.NewServer()
			defer s.Close()
			// A short timeout for the hanging kinds; calls are repeated until
			// both faults were served, since on a loaded machine a call can
			// time out before it reaches the server.
			c := client(t, s, 300*time.Millisecond)
			org := newID()
			s.FailNext(org, 2, versoritest.Fault{Kind: k, Size: 1 << 20})
			for i := 0; s.FaultsInjected(k) < 2; i++ {
				if i == 50 {
					t.Fatalf("faults served: %d", s.FaultsInjected(k))
				}
				if cl := importOnce(c, org); cl.Succeeded() {
					t.Fatalf("faulted call %d succeeded (%s)", i, cl)
				}
			}
			if s.ImportsOf(org) != 0 {
				t.Fatal("a fault carried the import out")
			}
			calls := s.Calls(org)
			if _, err := client(t, s, 10*time.Second).ImportPublicConnectorVersion(t.Context(), versori.OrgID(org), versori.ConnectorID(connector), "1.0.0"); err != nil {
				t.Fatalf("retry after the faults: %v", err)
			}
			if s.ImportsOf(org) != 1 || s.Calls(org) != calls+1 || s.FaultsInjected(k) != 2 {
				t.Errorf("imports %d calls %d faults %d", s.ImportsOf(org), s.Calls(org), s.FaultsInjected(k))
			}
		})
	}
}

func TestFaultScopes(t *testing.T) {
	s := versoritest.NewServer()
	defer s.Close()
	c := client(t, s, 5*time.Second)
	a, b := newID(), newID()

	// Per organisation: only a is affected, scripted before persistent.
	s.SetFault(a, versoritest.Fault{Kind: versoritest.FaultForbidden})
	s.FailNext(a, 1, versoritest.Fault{Kind: versoritest.FaultServerError, Status: 503})
	if cl := importOnce(c, a); cl != versori.ClassServerError {
		t.Errorf("scripted: %s", cl)
	}
	if cl := importOnce(c, a); cl != versori.ClassForbidden {
		t.Errorf("persistent: %s", cl)
	}
	if cl := importOnce(c, b); cl != versori.ClassImported {
		t.Errorf("other organisation: %s", cl)
	}
	s.SetFault(a, versoritest.Fault{})
	if cl := importOnce(c, a); cl != versori.ClassImported {
		t.Errorf("after clearing: %s", cl)
	}

	// Any organisation.
	s.FailNext("", 2, versoritest.Fault{Kind: versoritest.FaultNotFound})
	s.SetFault("", versoritest.Fault{Kind: versoritest.FaultInvalid})
	for i, want := range []versori.Class{versori.ClassNotFound, versori.ClassNotFound, versori.ClassInvalid} {
		if cl := importOnce(c, newID()); cl != want {
			t.Errorf("global call %d: %s, want %s", i, cl, want)
		}
	}
	s.ClearFaults()
	if cl := importOnce(c, newID()); cl != versori.ClassImported {
		t.Errorf("after ClearFaults: %s", cl)
	}
	s.FailNext(a, 0, versoritest.Fault{Kind: versoritest.FaultReset}) // no-op
	if cl := importOnce(c, newID()); cl != versori.ClassImported {
		t.Errorf("FailNext(0): %s", cl)
	}
}

// TestScriptedFaultsSurviveRefusals: a call refused by the switches does
// not use up a scripted fault.
func TestScriptedFaultsSurviveRefusals(t *testing.T) {
	s := versoritest.NewServer()
	defer s.Close()
	c := client(t, s, 5*time.Second)
	org := newID()
	s.FailNext(org, 1, versoritest.Fault{Kind: versoritest.FaultForbidden})
	s.SetOutage(true)
	if cl := importOnce(c, org); cl != versori.ClassServerError {
		t.Fatalf("outage: %s", cl)
	}
	s.SetOutage(false)
	s.SetUnauthorized(true)
	if cl := importOnce(c, org); cl != versori.ClassUnauthorized {
		t.Fatalf("revoked: %s", cl)
	}
	s.SetUnauthorized(false)
	if cl := importOnce(c, org); cl != versori.ClassForbidden {
		t.Fatalf("scripted fault after the refusals: %s", cl)
	}
	if s.StatusCount(503) != 1 || s.StatusCount(401) != 1 || s.StatusCount(403) != 1 || s.StatusCount(-1) != 0 || s.StatusCount(1000) != 0 {
		t.Errorf("status counts: %v", s.Stats().Statuses)
	}
}

func TestFaultRates(t *testing.T) {
	s := versoritest.NewServer(versoritest.WithSeed(42), versoritest.WithFaultRates(map[versoritest.FaultKind]float64{
		versoritest.FaultServerError: 0.2, versoritest.FaultRateLimited: 0.1,
	}))
	defer s.Close()
	c := client(t, s, 5*time.Second)
	const n = 1000
	count := map[versori.Class]int{}
	for range n {
		count[importOnce(c, newID())]++
	}
	// Binomial: 3 standard deviations either side.
	within := func(got int, p float64) bool {
		sd := 3 * mathSqrt(n*p*(1-p))
		return float64(got) > n*p-sd && float64(got) < n*p+sd
	}
	if !within(count[versori.ClassServerError], 0.2) || !within(count[versori.ClassRateLimited], 0.1) || count[versori.ClassImported]+count[versori.ClassServerError]+count[versori.ClassRateLimited] != n {
		t.Errorf("classes %v over %d calls, want about 20%% server_error and 10%% rate_limited", count, n)
	}
	if s.Imports() != count[versori.ClassImported] {
		t.Errorf("imports %d, imported %d", s.Imports(), count[versori.ClassImported])
	}
	if err := s.SetFaultRates(map[versoritest.FaultKind]float64{versoritest.FaultReset: 2}); err == nil {
		t.Error("rate 2 accepted")
	}
	if err := s.SetFaultRates(nil); err != nil {
		t.Fatal(err)
	}
	if cl := importOnce(c, newID()); cl != versori.ClassImported {
		t.Errorf("after clearing rates: %s", cl)
	}
}

func mathSqrt(x float64) float64 {
	z := x
	for range 50 {
		z = (z + x/z) / 2
	}
	return z
}

func TestRateLimitEnforced(t *testing.T) {
	s := versoritest.NewServer(versoritest.WithRateLimit(1, 5))
	defer s.Close()
	c := client(t, s, 5*time.Second)
	const n = 20
	var wg sync.WaitGroup
	classes := make(chan versori.Class, n)
	for range n {
		wg.Go(func() { classes <- importOnce(c, newID()) })
	}
	wg.Wait()
	close(classes)
	count := map[versori.Class]int{}
	for cl := range classes {
		count[cl]++
	}
	// 1/s: within the test's few milliseconds only the burst passes.
	if count[versori.ClassImported] != 5 || count[versori.ClassRateLimited] != n-5 || s.RateViolations() != n-5 {
		t.Errorf("classes %v, violations %d; want 5 imported, %d rate limited", count, s.RateViolations(), n-5)
	}
	_, err := c.ImportPublicConnectorVersion(t.Context(), versori.OrgID(newID()), versori.ConnectorID(connector), "1")
	if d, ok := versori.RetryAfter(err); !ok || d < time.Second || d > 6*time.Second {
		t.Errorf("Retry-After %s %t", d, ok)
	}

	s.SetRateLimitPolicy(versoritest.RateLimit{PerSecond: 1, Burst: 1, OmitRetryAfter: true})
	importOnce(c, newID())
	_, err = c.ImportPublicConnectorVersion(t.Context(), versori.OrgID(newID()), versori.ConnectorID(connector), "1")
	if _, ok := versori.RetryAfter(err); ok || versori.Classify(err) != versori.ClassRateLimited {
		t.Errorf("without Retry-After: %v", err)
	}
}

func TestRateLimitObserveOnly(t *testing.T) {
	s := versoritest.NewServer(versoritest.WithRateLimitPolicy(versoritest.RateLimit{PerSecond: 1, Burst: 2, ObserveOnly: true}))
	defer s.Close()
	c := client(t, s, 5*time.Second)
	for range 10 {
		if cl := importOnce(c, newID()); cl != versori.ClassImported {
			t.Fatalf("observe-only refused a call: %s", cl)
		}
	}
	if s.RateViolations() != 8 || s.Imports() != 10 {
		t.Errorf("violations %d imports %d, want 8 and 10", s.RateViolations(), s.Imports())
	}
	if s.MaxCallsInWindow(time.Second) != 10 || s.Stats().MaxCallsPerSecond != 10 {
		t.Errorf("max calls in a second: %d", s.MaxCallsInWindow(time.Second))
	}
	times := s.CallTimes()
	if len(times) != 10 {
		t.Fatalf("%d call times", len(times))
	}
	for i := 1; i < len(times); i++ {
		if times[i].Before(times[i-1]) {
			t.Fatal("call times out of order")
		}
	}
}

func TestLatencyIsApplied(t *testing.T) {
	s := versoritest.NewServer()
	defer s.Close()
	c := client(t, s, 5*time.Second)
	timeIt := func() time.Duration {
		start := time.Now()
		for range 5 {
			importOnce(c, newID())
		}
		return time.Since(start)
	}
	base := timeIt()
	s.SetLatency(versoritest.Latency{Distribution: versoritest.Constant, Mean: 40 * time.Millisecond})
	slow := timeIt()
	// Ratio, not absolute: five calls must take at least the 200ms added.
	if slow < 200*time.Millisecond || slow < 2*base {
		t.Errorf("with 40ms latency five calls took %s (without: %s)", slow, base)
	}
}

func TestHangReleasedByClose(t *testing.T) {
	s := versoritest.NewServer()
	c := client(t, s, time.Minute)
	s.SetFault("", versoritest.Fault{Kind: versoritest.FaultHang})
	done := make(chan versori.Class)
	go func() { done <- importOnce(c, newID()) }()
	for s.TotalCalls() == 0 {
		time.Sleep(time.Millisecond)
	}
	s.Close()
	select {
	case cl := <-done:
		if cl != versori.ClassNetwork {
			t.Errorf("hung call ended as %s", cl)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not release a hanging call")
	}
}

func TestHangWithDelayAnswers504(t *testing.T) {
	s := versoritest.NewServer()
	defer s.Close()
	c := client(t, s, 5*time.Second)
	s.FailNext("", 1, versoritest.Fault{Kind: versoritest.FaultHang, Delay: 10 * time.Millisecond})
	s.FailNext("", 1, versoritest.Fault{Kind: versoritest.FaultSlowImport, Delay: 10 * time.Millisecond})
	org := newID()
	if _, err := c.ImportPublicConnectorVersion(t.Context(), versori.OrgID(org), versori.ConnectorID(connector), "1"); versori.Classify(err) != versori.ClassServerError || !strings.Contains(err.Error(), "504") {
		t.Errorf("hang with delay: %v", err)
	}
	if cl := importOnce(c, org); cl != versori.ClassImported || s.ImportsOf(org) != 1 {
		t.Errorf("slow import with delay: %s", cl)
	}
}

func TestAuth(t *testing.T) {
	s := versoritest.NewServer(versoritest.WithAPIKey("the-key"))
	defer s.Close()
	if s.APIKey() != "the-key" {
		t.Fatal(s.APIKey())
	}
	for header, want := range map[string]int{"Bearer the-key": 200, "JWT the-key": 200, "bearer the-key": 200,
		"Bearer other": 401, "Basic the-key": 401, "the-key": 401, "": 401} {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/o/"+newID()+"/connectors/"+connector+"/versions/1/library/import", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Authorization %q: %d, want %d", header, resp.StatusCode, want)
		}
	}
	c := client(t, s, time.Second)
	s.RotateKey("new-key")
	if cl := importOnce(c, newID()); cl != versori.ClassUnauthorized {
		t.Errorf("old key after rotation: %s", cl)
	}
}

func TestRoutingAndValidation(t *testing.T) {
	s := versoritest.NewServer(versoritest.WithAPIKey("k"))
	defer s.Close()
	do := func(method, path string) (int, map[string]any) {
		req, _ := http.NewRequest(method, s.URL+path, nil)
		req.Header.Set("Authorization", "Bearer k")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if st, body := do("POST", "/o/not-a-ulid/connectors/"+connector+"/versions/1/library/import"); st != 400 || body["fields"] == nil {
		t.Errorf("bad org: %d %v", st, body)
	}
	if st, _ := do("GET", "/o/"+newID()+"/connectors/bad/versions/1"); st != 400 {
		t.Errorf("bad connector on get: %d", st)
	}
	if st, _ := do("GET", "/o/"+newID()+"/connectors/bad/versions"); st != 400 {
		t.Errorf("bad connector on list: %d", st)
	}
	if st, _ := do("GET", "/o/"+newID()+"/connectors/"+connector+"/versions"); st != 404 {
		t.Errorf("list with nothing held: %d", st)
	}
	if st, body := do("GET", "/nowhere"); st != 404 || body["code"] != "not_found" {
		t.Errorf("unknown path: %d %v", st, body)
	}
	if st, _ := do("GET", "/connectors?first=x"); st != 400 {
		t.Errorf("bad page size: %d", st)
	}
	// Mounted elsewhere under its own prefix, as a plain handler.
	h := versoritest.NewUnstartedServer(versoritest.WithPrefix("/v1/"), versoritest.WithAPIKey("k"))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/v1/o/"+newID()+"/connectors/"+connector+"/versions/1/library/import", nil)
	req.Header.Set("Authorization", "Bearer k")
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || h.Imports() != 1 || h.URL != "" {
		t.Errorf("mounted handler: %d %s", rec.Code, rec.Body)
	}
	if err := h.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Start("127.0.0.1:0"); err == nil {
		t.Error("second Start succeeded")
	}
	if !strings.HasSuffix(h.URL, "/v1") {
		t.Errorf("URL %q", h.URL)
	}
	if err := versoritest.NewUnstartedServer().Start("256.0.0.1:0"); err == nil {
		t.Error("Start on a bad address succeeded")
	}
}

func TestResetAndStats(t *testing.T) {
	s := versoritest.NewServer(versoritest.WithRateLimitPolicy(versoritest.RateLimit{PerSecond: 1, ObserveOnly: true}))
	defer s.Close()
	c := client(t, s, time.Second)
	org := newID()
	importOnce(c, org)
	importOnce(c, org)
	s.FailNext("", 1, versoritest.Fault{Kind: versoritest.FaultServerError})
	importOnce(c, newID())
	s.SetOutage(true)
	st := s.Stats()
	if st.Calls != 3 || st.Requests != 3 || st.Imports != 1 || st.Conflicts != 1 || st.RateViolations != 2 || st.Organisations != 2 ||
		st.MaxCallsPerSecond != 3 || st.MeanCallsPerSecond <= 0 || st.Faults[versoritest.FaultServerError] != 1 ||
		st.Statuses["200"] != 1 || st.Statuses["409"] != 1 || st.Statuses["500"] != 1 {
		t.Errorf("stats %+v", st)
	}
	s.Reset()
	if st := s.Stats(); st.Calls != 0 || st.Imports != 0 || st.Organisations != 0 || len(st.Statuses) != 0 || len(st.Faults) != 0 || len(s.CallTimes()) != 0 {
		t.Errorf("after Reset: %+v", st)
	}
	// Reset forgot the held version and turned the outage off.
	if cl := importOnce(c, org); cl != versori.ClassImported {
		t.Errorf("after Reset: %s", cl)
	}
}

func TestAdminHandler(t *testing.T) {
	s := versoritest.NewServer(versoritest.WithAPIKey("k"))
	defer s.Close()
	admin := httptest.NewServer(s.AdminHandler())
	defer admin.Close()
	c := client(t, s, 2*time.Second)
	call := func(method, path string, wantStatus int) string {
		t.Helper()
		req, _ := http.NewRequest(method, admin.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantStatus {
			t.Errorf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, wantStatus)
		}
		return string(b)
	}
	org := newID()
	call("GET", "/_health", 200)
	call("POST", "/_fault?org="+org+"&kind=server_error&n=1&status=503", 200)
	if cl := importOnce(c, org); cl != versori.ClassServerError {
		t.Errorf("after /_fault: %s", cl)
	}
	importOnce(c, org)
	if got := call("GET", "/_calls?org="+org, 200); !strings.Contains(got, `"calls":2`) || !strings.Contains(got, `"imports":1`) {
		t.Errorf("/_calls: %s", got)
	}
	var st versoritest.Stats
	if err := json.Unmarshal([]byte(call("GET", "/_stats", 200)), &st); err != nil || st.Calls != 2 || st.Statuses["503"] != 1 {
		t.Errorf("/_stats: %+v %v", st, err)
	}
	call("POST", "/_fault?kind=forbidden", 200)
	if cl := importOnce(c, newID()); cl != versori.ClassForbidden {
		t.Errorf("global persistent fault: %s", cl)
	}
	call("POST", "/_fault", 200) // clears
	call("POST", "/_outage?on=true", 200)
	if cl := importOnce(c, newID()); cl != versori.ClassServerError {
		t.Errorf("outage: %s", cl)
	}
	call("POST", "/_outage?on=false", 200)
	call("POST", "/_unauthorized?on=true", 200)
	if cl := importOnce(c, newID()); cl != versori.ClassUnauthorized {
		t.Errorf("revoked: %s", cl)
	}
	call("POST", "/_unauthorized?on=false", 200)
	call("POST", "/_fault_rates?invalid=1", 200)
	if cl := importOnce(c, newID()); cl != versori.ClassInvalid {
		t.Errorf("fault rates: %s", cl)
	}
	call("POST", "/_fault_rates", 200)
	call("POST", "/_rate_limit?per_second=1&burst=1&observe=true", 200)
	call("POST", "/_latency?mean=1ms&jitter=1ms&distribution=uniform&max=2ms", 200)
	importOnce(c, newID())
	importOnce(c, newID())
	if s.RateViolations() < 1 {
		t.Error("rate limit from /_rate_limit not applied")
	}
	call("POST", "/_reset", 200)
	if s.TotalCalls() != 0 {
		t.Error("/_reset did not reset")
	}
	for _, bad := range []string{"/_fault?kind=nope", "/_fault?kind=hang&delay=x", "/_fault?kind=hang&n=x", "/_fault?kind=oversized&size=x",
		"/_fault_rates?server_error=x", "/_fault_rates?server_error=3", "/_rate_limit?per_second=x", "/_rate_limit?burst=x",
		"/_latency?mean=x", "/_outage?on=maybe"} {
		call("POST", bad, 400)
	}
	call("GET", "/_reset", 405)
}

// TestEchoStyles: FaultEchoPHP sends valid JSON (not the API's shape) whose
// Authorization value is PHP-escaped; FaultEchoPadded puts the header right
// after Fault.Size spaces.
func TestEchoStyles(t *testing.T) {
	const key = "sk_test_a/b+c"
	s := versoritest.NewServer(versoritest.WithAPIKey(key))
	defer s.Close()
	post := func(f versoritest.Fault) (int, string) {
		t.Helper()
		s.FailNext("", 1, f)
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/o/"+newID()+"/connectors/"+connector+"/versions/1.0.0/library/import", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, body := post(versoritest.Fault{Kind: versoritest.FaultEchoPHP})
	var echo struct {
		Headers map[string]string `json:"headers"`
	}
	if status != 502 || json.Unmarshal([]byte(body), &echo) != nil || echo.Headers["Authorization"] != "Bearer "+key {
		t.Fatalf("php echo: %d %s", status, body)
	}
	if !strings.Contains(body, `sk_test_a\/b\u002bc`) || strings.Contains(body, key) {
		t.Errorf("php echo not escaped as PHP does: %s", body)
	}
	status, body = post(versoritest.Fault{Kind: versoritest.FaultEchoPadded})
	pad := int(versoritest.DefaultEchoPadding)
	if status != 500 || len(body) < pad || strings.TrimLeft(body[:pad], " ") != "" || !strings.HasPrefix(body[pad:], "Authorization: Bearer "+key+"\n") {
		t.Errorf("padded echo: %d, %q", status, body[min(len(body), pad):])
	}
	if _, body = post(versoritest.Fault{Kind: versoritest.FaultEchoPadded, Size: 3, Status: 503}); !strings.HasPrefix(body, "   Authorization: ") {
		t.Errorf("padded echo with Size 3: %q", body)
	}
}
