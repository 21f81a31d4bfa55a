package gate_test

import (
	"context"
	"encoding/json"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/versori/import-worker/gate"
	"github.com/versori/import-worker/gate/gatetest"
)

const errorRatio = `sum(rate(import_failures_total[5m])) / sum(rate(import_total[5m]))`

var spec = gate.Spec{Query: errorRatio, Condition: "< 0.05"}.WithDefaults()

func newMeasurer(t *testing.T, url string, timeout time.Duration) *gate.Measurer {
	t.Helper()
	m, err := gate.New(gate.Config{URL: url, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkReason fails t unless r is fit for a rollout's halt_reason.
func checkReason(t *testing.T, r string) {
	t.Helper()
	if r == "" {
		t.Error("empty reason")
	}
	if len(r) > gate.MaxReasonLen {
		t.Errorf("reason of %d bytes, want at most %d: %q", len(r), gate.MaxReasonLen, r)
	}
	if !utf8.ValidString(r) {
		t.Errorf("reason not UTF-8: %q", r)
	}
	for _, c := range r {
		if !unicode.IsPrint(c) {
			t.Errorf("reason has %U: %q", c, r)
			break
		}
	}
}

func TestMeasure(t *testing.T) {
	srv := gatetest.NewServer()
	defer srv.Close()
	m := newMeasurer(t, srv.URL, 0)
	nan, inf := math.NaN(), math.Inf(1)

	cases := []struct {
		name    string
		set     func()
		cond    string
		verdict gate.Verdict
		value   float64 // NaN: want NaN
		samples int
		reason  string
	}{
		{"one passing sample", func() { srv.SetValue(0.01) }, "< 0.05", gate.Pass, 0.01, 1, "0.01 < 0.05"},
		{"every sample passes", func() { srv.SetVector(0.01, 0.04, 0.02) }, "< 0.05", gate.Pass, 0.04, 3, "0.04 < 0.05 (worst of 3 series)"},
		{"worst under >=", func() { srv.SetVector(0.99, 0.96, 0.98) }, ">= 0.95", gate.Pass, 0.96, 3, "0.96 >= 0.95 (worst of 3 series)"},
		{"equal to zero", func() { srv.SetValue(0) }, "== 0", gate.Pass, 0, 1, "0 == 0"},
		{"one failing sample", func() { srv.SetValue(0.2) }, "< 0.05", gate.Fail, 0.2, 1, `0.2 does not satisfy < 0.05 (1 of 1 series): {series="0"}`},
		{"on the threshold", func() { srv.SetValue(0.05) }, "< 0.05", gate.Fail, 0.05, 1, "0.05 does not satisfy < 0.05"},
		{"first failing sample", func() { srv.SetVector(0.01, 0.3, 0.02, 0.4) }, "< 0.05", gate.Fail, 0.3, 4, `0.3 does not satisfy < 0.05 (2 of 4 series): {series="1"}`},
		{"+Inf fails", func() { srv.SetValue(inf) }, "< 0.05", gate.Fail, inf, 1, "+Inf does not satisfy < 0.05"},
		{"fail outranks NaN", func() { srv.SetVector(nan, 0.3) }, "< 0.05", gate.Fail, 0.3, 2, `0.3 does not satisfy < 0.05 (1 of 2 series): {series="1"}`},
		{"no data", func() { srv.SetNoData() }, "< 0.05", gate.Inconclusive, nan, 0, "no data: the query returned an empty vector"},
		{"no values", func() { srv.SetVector() }, "< 0.05", gate.Inconclusive, nan, 0, "no data"},
		{"NaN", func() { srv.SetValue(nan) }, "< 0.05", gate.Inconclusive, nan, 1, `a sample is NaN: {series="0"}`},
		{"NaN under !=", func() { srv.SetValue(nan) }, "!= 0", gate.Inconclusive, nan, 1, "a sample is NaN"},
		{"NaN beside passes", func() { srv.SetVector(0.01, nan) }, "< 0.05", gate.Inconclusive, nan, 2, `a sample is NaN: {series="1"}`},
		{"scalar passes", func() { srv.SetScalar(0.01) }, "< 0.05", gate.Pass, 0.01, 1, "0.01 < 0.05"},
		{"scalar fails", func() { srv.SetScalar(1) }, "< 0.05", gate.Fail, 1, 1, "1 does not satisfy < 0.05"},
		{"scalar NaN", func() { srv.SetScalar(nan) }, "< 0.05", gate.Inconclusive, nan, 1, "the query result is NaN"},
		{"matrix", func() { srv.SetMatrix(0.01) }, "< 0.05", gate.Inconclusive, nan, 1, "the query returned a range vector; want an instant vector or a scalar"},
		{"string", func() { srv.SetString("ok") }, "< 0.05", gate.Inconclusive, nan, 0, "the query returned a string"},
		{"bad_data", func() { srv.SetError(400, `1:5: parse error: unexpected "}"`) }, "< 0.05", gate.Inconclusive, nan, 0, `Prometheus rejected the query: 1:5: parse error: unexpected "}"`},
		{"execution", func() { srv.SetError(422, "query processing would load too many samples into memory") }, "< 0.05", gate.Inconclusive, nan, 0, "Prometheus could not evaluate the query: query processing would load too many samples"},
		{"503", func() { srv.SetError(503, "TSDB not ready") }, "< 0.05", gate.Inconclusive, nan, 0, `Prometheus answered server error: 503: {"error":"TSDB not ready"`},
		{"proxy page", func() {
			srv.SetRaw(502, "<html>\r\n<head><title>502 Bad Gateway</title></head>\n"+strings.Repeat("<p>x</p>\n", 500))
		}, "< 0.05", gate.Inconclusive, nan, 0, "Prometheus answered server error: 502: <html>"},
		{"404", func() { srv.SetRaw(404, "404 page not found\n") }, "< 0.05", gate.Inconclusive, nan, 0, "Prometheus answered client error: 404: 404 page not found"},
		{"truncated JSON", func() { srv.SetRaw(200, `{"status":"success","data":{"resultType":"vector","res`) }, "< 0.05", gate.Inconclusive, nan, 0, "Prometheus's answer is unreadable"},
		{"native histogram", func() {
			srv.SetRaw(200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"1","sum":"1","buckets":[[0,"0","1","1"]]}]}]}}`)
		}, "< 0.05", gate.Inconclusive, nan, 1, "a sample is a native histogram, not a number"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.set()
			s := spec
			s.Condition = tc.cond
			before := time.Now()
			got := m.Measure(context.Background(), s)
			if got.Verdict != tc.verdict {
				t.Errorf("verdict %q, want %q (%+v)", got.Verdict, tc.verdict, got)
			}
			if math.IsNaN(tc.value) != math.IsNaN(got.Value) || (!math.IsNaN(tc.value) && got.Value != tc.value) {
				t.Errorf("value %v, want %v", got.Value, tc.value)
			}
			if got.Samples != tc.samples {
				t.Errorf("samples %d, want %d", got.Samples, tc.samples)
			}
			if !strings.HasPrefix(got.Reason, tc.reason) {
				t.Errorf("reason %q, want it to start %q", got.Reason, tc.reason)
			}
			checkReason(t, got.Reason)
			if got.At.Before(before) || got.At.After(time.Now()) {
				t.Errorf("At %v, not the time of the measurement", got.At)
			}
			if srv.LastQuery() != errorRatio {
				t.Errorf("server got query %q, want %q", srv.LastQuery(), errorRatio)
			}
			if _, err := json.Marshal(got); err != nil {
				t.Errorf("Measurement does not marshal: %v", err)
			}
		})
	}
	if n := srv.Queries(); n != len(cases) {
		t.Errorf("server got %d queries, want %d", n, len(cases))
	}
}

func TestMeasureHang(t *testing.T) {
	srv := gatetest.NewServer()
	defer srv.Close()
	srv.SetHang()
	m := newMeasurer(t, srv.URL, 200*time.Millisecond)
	start := time.Now()
	got := m.Measure(context.Background(), spec)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Measure took %s with a 200ms timeout", took)
	}
	if got.Verdict != gate.Inconclusive || got.Reason != "Prometheus did not answer within 200ms" {
		t.Errorf("hung server: %+v", got)
	}
	if srv.Queries() != 1 {
		t.Errorf("server got %d queries, want 1", srv.Queries())
	}
	// A later answer ends the hang.
	srv.SetValue(0)
	if got := m.Measure(context.Background(), spec); got.Verdict != gate.Pass {
		t.Errorf("after the hang: %+v", got)
	}
}

func TestMeasureCallerCancels(t *testing.T) {
	srv := gatetest.NewServer()
	defer srv.Close()
	srv.SetHang()
	m := newMeasurer(t, srv.URL, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	got := m.Measure(ctx, spec)
	if got.Verdict != gate.Inconclusive || got.Reason != "measurement cancelled: context canceled" {
		t.Errorf("cancelled: %+v", got)
	}
}

func TestMeasureUnreachable(t *testing.T) {
	// A port that was just listening and is now closed refuses at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	m := newMeasurer(t, "http://user:secret@"+addr, 0)
	got := m.Measure(context.Background(), spec)
	if got.Verdict != gate.Inconclusive || !strings.HasPrefix(got.Reason, "Prometheus unreachable: dial tcp "+addr) ||
		!strings.Contains(got.Reason, "refused") {
		t.Errorf("unreachable: %+v", got)
	}
	if strings.Contains(got.Reason, "secret") {
		t.Errorf("reason shows the URL's password: %q", got.Reason)
	}
	checkReason(t, got.Reason)
}

func TestMeasureServerClosed(t *testing.T) {
	srv := gatetest.NewServer()
	m := newMeasurer(t, srv.URL, 0)
	srv.Close()
	if got := m.Measure(context.Background(), spec); got.Verdict != gate.Inconclusive || !strings.HasPrefix(got.Reason, "Prometheus unreachable: ") {
		t.Errorf("closed server: %+v", got)
	}
}

func TestMeasureTooLarge(t *testing.T) {
	srv := gatetest.NewServer()
	defer srv.Close()
	// A valid answer (no data), made 9 MiB long by white space.
	srv.SetRaw(200, `{"status":"success",`+strings.Repeat(" ", 9<<20)+`"data":{"resultType":"vector","result":[]}}`)
	got := newMeasurer(t, srv.URL, 0).Measure(context.Background(), gate.Spec{Query: "up", Condition: "== 0"})
	if got.Verdict != gate.Inconclusive || !strings.Contains(got.Reason, "larger than 8 MiB") {
		t.Errorf("huge answer: %+v", got)
	}
}

func TestMeasureNotConfigured(t *testing.T) {
	const want = "no Prometheus URL configured (GATE_PROMETHEUS_URL)"
	var nilM *gate.Measurer
	for name, m := range map[string]*gate.Measurer{"empty URL": newMeasurer(t, "", 0), "nil": nilM} {
		got := m.Measure(context.Background(), spec)
		if got.Verdict != gate.Inconclusive || got.Reason != want || !math.IsNaN(got.Value) || got.At.IsZero() {
			t.Errorf("%s: %+v", name, got)
		}
	}
}

func TestMeasureInvalidSpec(t *testing.T) {
	srv := gatetest.NewServer()
	defer srv.Close()
	srv.SetValue(0)
	m := newMeasurer(t, srv.URL, 0)
	for _, s := range []gate.Spec{
		{Query: "up", Condition: "=> 1"},
		{Query: "", Condition: "< 1"},
		{Query: "up[5m]", Condition: "< 1"},
		{Query: "sum(" + strings.Repeat("x", 1000), Condition: "< 1"},
	} {
		got := m.Measure(context.Background(), s)
		if got.Verdict != gate.Inconclusive || !strings.HasPrefix(got.Reason, "invalid gate: gate ") {
			t.Errorf("%+v: %+v", s, got)
		}
		checkReason(t, got.Reason)
	}
	if srv.Queries() != 0 {
		t.Errorf("an invalid spec was sent to Prometheus %d times", srv.Queries())
	}
}

type countingTransport struct{ n atomic.Int32 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

func TestConfigClient(t *testing.T) {
	srv := gatetest.NewServer()
	defer srv.Close()
	srv.SetValue(0)
	tr := &countingTransport{}
	client := &http.Client{Transport: tr}
	m, err := gate.New(gate.Config{URL: srv.URL + "/", Client: client})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Measure(context.Background(), gate.Spec{Query: "up", Condition: "== 0"}); got.Verdict != gate.Pass {
		t.Errorf("with a client: %+v", got)
	}
	if tr.n.Load() != 1 {
		t.Errorf("the Config's client made %d requests, want 1", tr.n.Load())
	}
	if client.Transport != tr {
		t.Error("New changed the caller's client")
	}
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		cfg  gate.Config
		want string
	}{
		{gate.Config{URL: "prometheus:9090"}, `want http://HOST[:PORT][/PATH]`},
		{gate.Config{URL: "ftp://prometheus"}, `gate: Prometheus URL "ftp://prometheus": want http://`},
		{gate.Config{URL: "http://"}, `want http://`},
		{gate.Config{URL: "https://u:secret@prom/%zz"}, "gate: Prometheus URL does not parse: invalid URL escape"},
		{gate.Config{URL: "https://u:secret@"}, "want http://"},
		{gate.Config{URL: "http://prom", Timeout: -time.Second}, "gate: timeout -1s: want a positive duration"},
	} {
		_, err := gate.New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("New(%+v) = %q: shows the password", tc.cfg, err)
		}
	}
}

func TestMeasureConcurrent(t *testing.T) {
	srv := gatetest.NewServer()
	defer srv.Close()
	m := newMeasurer(t, srv.URL, 0)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 10 {
				if i%2 == 0 {
					srv.SetValue(float64(j) / 100)
				}
				if v := m.Measure(context.Background(), spec).Verdict; v != gate.Pass && v != gate.Fail {
					t.Errorf("verdict %q", v)
				}
			}
		})
	}
	srv.SetValue(0)
	wg.Wait()
	if srv.Queries() != 80 {
		t.Errorf("server got %d queries, want 80", srv.Queries())
	}
}

func TestMeasurementJSON(t *testing.T) {
	at := time.Date(2026, 12, 2, 3, 4, 5, 6, time.UTC)
	for _, v := range []float64{0.25, 0, -1e-300, math.Inf(1), math.Inf(-1), math.NaN()} {
		in := gate.Measurement{Verdict: gate.Fail, Value: v, Samples: 2, Reason: "r", At: at}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatalf("Marshal(%v): %v", v, err)
		}
		var out gate.Measurement
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("Unmarshal(%s): %v", b, err)
		}
		same := out.Value == v || (math.IsNaN(v) && math.IsNaN(out.Value))
		if !same || out.Verdict != in.Verdict || out.Samples != in.Samples || out.Reason != in.Reason || !out.At.Equal(at) {
			t.Errorf("round trip of %v: %s gives %+v", v, b, out)
		}
	}
	b, _ := json.Marshal(gate.Measurement{Verdict: gate.Inconclusive, Value: math.NaN()})
	if !strings.Contains(string(b), `"value":"NaN"`) {
		t.Errorf("NaN as %s", b)
	}
	var out gate.Measurement
	if err := json.Unmarshal([]byte(`{"verdict":"pass"}`), &out); err != nil || !math.IsNaN(out.Value) {
		t.Errorf("no value: %+v, %v", out, err)
	}
	if err := json.Unmarshal([]byte(`{"value":"lots"}`), &out); err == nil {
		t.Error(`value "lots" accepted`)
	}
}
