package versoritest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

// TestRateLimitHeaderStyles: each style reaches the real client as the
// limiter's state, on successes, refusals and other answers alike.
func TestRateLimitHeaderStyles(t *testing.T) {
	for _, tc := range []struct {
		style    versoritest.HeaderStyle
		wantRate float64
	}{{versoritest.HeadersIETF, 2}, {versoritest.HeadersX, 0}} {
		t.Run(tc.style.String(), func(t *testing.T) {
			s := versoritest.NewServer(versoritest.WithRateLimitPolicy(versoritest.RateLimit{PerSecond: 2, Burst: 2, Headers: tc.style}))
			defer s.Close()
			c := client(t, s, 2*time.Second)
			org := newID()
			conn, err := c.ImportPublicConnectorVersion(t.Context(), versori.OrgID(org), versori.ConnectorID(connector), "1")
			if err != nil {
				t.Fatal(err)
			}
			if rl := conn.RateLimit; rl.Rate != tc.wantRate || rl.Remaining != 1 || rl.Reset != time.Second {
				t.Errorf("first call: %+v", rl)
			}
			_, err = c.ImportPublicConnectorVersion(t.Context(), versori.OrgID(org), versori.ConnectorID(connector), "1") // 409
			if rl := versori.RateLimitOf(nil, err); versori.Classify(err) != versori.ClassAlreadyPresent || rl.Remaining != 0 || rl.Rate != tc.wantRate {
				t.Errorf("409: %v %+v", err, rl)
			}
			_, err = c.ImportPublicConnectorVersion(t.Context(), versori.OrgID(newID()), versori.ConnectorID(connector), "1")
			rl := versori.RateLimitOf(nil, err)
			if versori.Classify(err) != versori.ClassRateLimited || rl.Remaining != 0 || rl.Reset != time.Second {
				t.Errorf("429: %v %+v", err, rl)
			}
			if d, ok := versori.RetryAfter(err); !ok || d != time.Second {
				t.Errorf("429 lost Retry-After: %s %t", d, ok)
			}
		})
	}
	s := versoritest.NewServer(versoritest.WithRateLimit(2, 2))
	defer s.Close()
	conn, err := client(t, s, 2*time.Second).ImportPublicConnectorVersion(t.Context(), versori.OrgID(newID()), versori.ConnectorID(connector), "1")
	if err != nil || conn.RateLimit.Known() {
		t.Errorf("HeadersNone sent headers: %v %+v", err, conn)
	}
}

// TestRateLimitSchedule: the limit follows its schedule, and the 429s show
// in RateLimitedTimes and the per-second stats.
func TestRateLimitSchedule(t *testing.T) {
	s := versoritest.NewServer()
	defer s.Close()
	c := client(t, s, 2*time.Second)
	s.SetRateLimitSchedule([]versoritest.RateLimitStep{
		{After: 0, Policy: versoritest.RateLimit{PerSecond: 1000, Burst: 50, Headers: versoritest.HeadersIETF}},
		{After: 300 * time.Millisecond, Policy: versoritest.RateLimit{PerSecond: 1, Burst: 1, Headers: versoritest.HeadersIETF}},
	})
	burst := func() (imported, limited int) {
		for range 10 {
			switch importOnce(c, newID()) {
			case versori.ClassImported:
				imported++
			case versori.ClassRateLimited:
				limited++
			}
		}
		return imported, limited
	}
	if imp, lim := burst(); imp != 10 || lim != 0 {
		t.Fatalf("under the high limit: %d imported, %d limited", imp, lim)
	}
	time.Sleep(350 * time.Millisecond)
	switched := time.Now()
	conn, err := c.ImportPublicConnectorVersion(t.Context(), versori.OrgID(newID()), versori.ConnectorID(connector), "1")
	if rl := versori.RateLimitOf(conn, err); err != nil && versori.Classify(err) != versori.ClassRateLimited || rl.Rate != 1 {
		t.Fatalf("after the step the headers say %+v (%v)", rl, err)
	}
	if imp, lim := burst(); imp > 1 || lim < 9 {
		t.Fatalf("under the low limit: %d imported, %d limited", imp, lim)
	}
	refused := s.RateLimitedTimes()
	if len(refused) != s.RateLimited() || len(refused) < 9 || refused[0].Before(switched) {
		t.Errorf("refusal log %d entries (count %d), first %v, step at %v", len(refused), s.RateLimited(), refused[0], switched)
	}
	st := s.Stats()
	sum := func(xs []int) (n int) {
		for _, x := range xs {
			n += x
		}
		return n
	}
	if st.RateLimited != int64(len(refused)) || sum(st.PerSecond.RateLimited) != len(refused) || sum(st.PerSecond.Calls) != s.TotalCalls() {
		t.Errorf("stats %+v, refusals %d, calls %d", st.PerSecond, len(refused), s.TotalCalls())
	}
	if s.StatusCount(429) != len(refused) {
		t.Errorf("429s %d, refusals %d", s.StatusCount(429), len(refused))
	}
	s.Reset()
	if s.RateLimited() != 0 || len(s.RateLimitedTimes()) != 0 || len(s.Stats().PerSecond.Calls) != 0 {
		t.Error("Reset kept the refusals")
	}
}

func TestAdminRateLimitEndpoints(t *testing.T) {
	s := versoritest.NewServer()
	defer s.Close()
	admin := httptest.NewServer(s.AdminHandler())
	defer admin.Close()
	post := func(path string, want int) {
		t.Helper()
		resp, err := http.Post(admin.URL+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST %s: %d %s, want %d", path, resp.StatusCode, b, want)
		}
	}
	c := client(t, s, 2*time.Second)
	post("/_rate_limit?per_second=5&burst=2&headers=x&omit_retry_after=true", 200)
	conn, err := c.ImportPublicConnectorVersion(t.Context(), versori.OrgID(newID()), versori.ConnectorID(connector), "1")
	if err != nil || conn.RateLimit.Remaining != 1 {
		t.Fatalf("x headers via admin: %v %+v", err, conn)
	}
	importOnce(c, newID())
	_, err = c.ImportPublicConnectorVersion(t.Context(), versori.OrgID(newID()), versori.ConnectorID(connector), "1")
	if _, ok := versori.RetryAfter(err); ok || versori.Classify(err) != versori.ClassRateLimited {
		t.Errorf("omit_retry_after via admin: %v", err)
	}
	post("/_reset", 200) // the limiter forgets the calls above
	post("/_rate_limit_schedule?steps=7@0s,1@1h&headers=ietf&burst=3", 200)
	conn, err = c.ImportPublicConnectorVersion(t.Context(), versori.OrgID(newID()), versori.ConnectorID(connector), "1")
	if err != nil || conn.RateLimit.Rate != 7 || conn.RateLimit.Remaining != 2 {
		t.Fatalf("schedule via admin: %v %+v", err, conn)
	}
	post("/_rate_limit_schedule", 200) // ends the schedule, keeps 7/s
	for _, bad := range []string{"/_rate_limit?headers=fancy", "/_rate_limit?observe=maybe", "/_rate_limit_schedule?steps=7", "/_rate_limit_schedule?steps=1@1s&headers=z"} {
		post(bad, 400)
	}
	resp, err := http.Get(admin.URL + "/_stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		RateLimited int `json:"rate_limited"`
		PerSecond   struct {
			Calls       []int `json:"calls"`
			RateLimited []int `json:"rate_limited"`
		} `json:"per_second"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.RateLimited != 0 || len(st.PerSecond.Calls) == 0 {
		t.Errorf("/_stats: %v %+v", err, st)
	}
}
