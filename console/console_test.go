package console

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/versori/import-worker/rollout"
)

func TestSignInCookieFlags(t *testing.T) {
	e := newEnv(t, Config{})
	// Without a session every page sends the browser to sign in.
	a := e.do("GET", "/ui/rollouts/r1?state=failed", nil, nil)
	if a.code != http.StatusSeeOther || a.hdr.Get("Location") != "/ui/signin?next="+url.QueryEscape("/ui/rollouts/r1?state=failed") {
		t.Fatalf("no session: %d %q", a.code, a.hdr.Get("Location"))
	}
	// A wrong token: 401 and no cookie.
	a = e.do("POST", "/ui/signin", nil, url.Values{"token": {"vit_wrong"}})
	if a.code != http.StatusUnauthorized || len(a.resp.Cookies()) != 0 || !strings.Contains(a.body, "Unknown token") {
		t.Fatalf("wrong token: %d cookies %v", a.code, a.resp.Cookies())
	}
	a = e.do("POST", "/ui/signin", nil, url.Values{"token": {operatorToken}, "next": {"/ui/rollouts/r1"}})
	if a.code != http.StatusSeeOther || a.hdr.Get("Location") != "/ui/rollouts/r1" {
		t.Fatalf("sign in: %d %q", a.code, a.hdr.Get("Location"))
	}
	raw := a.hdr.Get("Set-Cookie")
	for _, want := range []string{CookieName + "=", "Path=/ui/", "Max-Age=28800", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(raw, want) {
			t.Errorf("Set-Cookie %q lacks %q", raw, want)
		}
	}
	if strings.Contains(raw, operatorToken) || strings.Contains(raw, strings.TrimPrefix(operatorToken, "vit_")) {
		t.Error("the cookie holds the token")
	}
	// A next that leaves the console is not followed.
	a = e.do("POST", "/ui/signin", nil, url.Values{"token": {operatorToken}, "next": {"//evil.example/ui/"}})
	if a.hdr.Get("Location") != "/ui/" {
		t.Errorf("next=//evil: redirected to %q", a.hdr.Get("Location"))
	}
	ck := a.resp.Cookies()[0]
	p := e.do("GET", "/ui/", ck, nil)
	if p.code != 200 || !strings.Contains(p.body, "Signed in as <strong>ops</strong>") {
		t.Fatalf("list after sign in: %d\n%s", p.code, p.body)
	}
	// Sign-out needs the CSRF token, then clears the cookie.
	if a := e.do("POST", "/ui/signout", ck, url.Values{}); a.code != http.StatusForbidden {
		t.Errorf("sign out without CSRF: %d", a.code)
	}
	a = e.do("POST", "/ui/signout", ck, url.Values{"csrf": {csrfOf(t, p.body)}})
	if a.code != http.StatusSeeOther || !strings.Contains(a.hdr.Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("sign out: %d %q", a.code, a.hdr.Get("Set-Cookie"))
	}
}

func TestSessionTamperedOrExpired(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	e := newEnv(t, Config{Now: clock, TTL: time.Hour})
	ck, _ := e.signin(readerToken)
	if a := e.do("GET", "/ui/", ck, nil); a.code != 200 {
		t.Fatalf("fresh session: %d", a.code)
	}
	// Another key's signature, or a changed payload, is no session.
	forged := *ck
	forged.Value = strings.Replace(ck.Value, ck.Value[:4], "AAAA", 1)
	if a := e.do("GET", "/ui/", &forged, nil); a.code != http.StatusSeeOther {
		t.Errorf("tampered cookie: %d", a.code)
	}
	other := newEnv(t, Config{Now: clock})
	if a := other.do("GET", "/ui/", ck, nil); a.code != http.StatusSeeOther {
		t.Errorf("cookie of another key: %d", a.code)
	}
	now = now.Add(time.Hour + time.Second)
	if a := e.do("GET", "/ui/", ck, nil); a.code != http.StatusSeeOther {
		t.Errorf("expired session: %d", a.code)
	}
}

func TestKeyFromEnv(t *testing.T) {
	k, random, err := KeyFromEnv(func(string) string { return "" })
	if err != nil || !random || len(k) != 32 {
		t.Fatalf("unset: %d bytes, random %v, %v", len(k), random, err)
	}
	if _, _, err := KeyFromEnv(func(string) string { return "short" }); err == nil {
		t.Error("a 5-byte key was accepted")
	}
	long := strings.Repeat("k", 40)
	if k, random, err := KeyFromEnv(func(string) string { return long }); err != nil || random || string(k) != long {
		t.Errorf("40-byte key: %q %v %v", k, random, err)
	}
}

func TestCSRFRefused(t *testing.T) {
	e := newEnv(t, Config{})
	e.rollout("r1", 3)
	e.finish("r1", 0, failed("server_error", 500, "boom"))
	ck, csrf := e.signin(operatorToken)
	for name, form := range map[string]url.Values{"no token": {}, "wrong token": {"csrf": {csrf + "x"}}} {
		if a := e.do("POST", "/ui/rollouts/r1/retry", ck, form); a.code != http.StatusForbidden || !strings.Contains(a.body, "CSRF") {
			t.Errorf("%s: %d", name, a.code)
		}
	}
	// A cross-site POST is refused even with the token.
	if a := e.do("POST", "/ui/rollouts/r1/retry", ck, url.Values{"csrf": {csrf}}, "Sec-Fetch-Site", "cross-site"); a.code != http.StatusForbidden {
		t.Errorf("cross-site: %d", a.code)
	}
	if c := e.counts("r1"); c.Failed != 1 {
		t.Fatalf("a refused retry changed the rollout: failed %d", c.Failed)
	}
	// Without a session at all: 401.
	if a := e.do("POST", "/ui/rollouts/r1/cancel", nil, url.Values{"csrf": {csrf}}); a.code != http.StatusUnauthorized {
		t.Errorf("no session: %d", a.code)
	}
	a := e.do("POST", "/ui/rollouts/r1/retry", ck, url.Values{"csrf": {csrf}})
	if a.code != http.StatusSeeOther || a.hdr.Get("Location") != "/ui/rollouts/r1?done=retry&n=1" {
		t.Fatalf("retry with CSRF: %d %q %s", a.code, a.hdr.Get("Location"), a.body)
	}
	if c := e.counts("r1"); c.Failed != 0 || c.Pending != 3 {
		t.Fatalf("after retry: %+v", c)
	}
}

func TestReaderSeesNoActionsAndIsRefused(t *testing.T) {
	e := newEnv(t, Config{})
	e.rollout("r1", 4)
	e.finish("r1", 0, failed("server_error", 500, "boom"))
	ck, csrf := e.signin(readerToken)
	p := e.do("GET", "/ui/rollouts/r1", ck, nil)
	if p.code != 200 {
		t.Fatalf("reader page: %d", p.code)
	}
	for _, ctl := range []string{"confirm?action", `id="actions"`, "/retry", "/cancel", "/pause"} {
		if strings.Contains(p.body, ctl) {
			t.Errorf("the reader's page holds action control %q", ctl)
		}
	}
	// Forged actions, with the reader's own valid CSRF token: 403.
	for _, action := range []string{"retry", "cancel", "pause", "resume"} {
		a := e.do("POST", "/ui/rollouts/r1/"+action, ck, url.Values{"csrf": {csrf}})
		if a.code != http.StatusForbidden || !strings.Contains(a.body, "reader") {
			t.Errorf("reader %s: %d", action, a.code)
		}
	}
	if a := e.do("GET", "/ui/rollouts/r1/confirm?action=cancel", ck, nil); a.code != http.StatusForbidden {
		t.Errorf("reader confirm page: %d", a.code)
	}
	if c := e.counts("r1"); c.Failed != 1 || c.Pending != 3 || c.Cancelled != 0 || e.m.QueuePaused(e.m.Queue()) {
		t.Fatalf("a reader changed the rollout: %+v", c)
	}
}

func TestErrorMessageEscaped(t *testing.T) {
	e := newEnv(t, Config{})
	e.rollout("r1", 2)
	msg := `<script>alert("x")</script><img src=x onerror=alert(1)>`
	e.finish("r1", 0, failed("invalid", 422, msg))
	ck, _ := e.signin(operatorToken)
	p := e.do("GET", "/ui/rollouts/r1?state=failed", ck, nil)
	if p.code != 200 {
		t.Fatalf("%d", p.code)
	}
	if strings.Contains(p.body, "<script>alert") || strings.Contains(p.body, "<img src=x") {
		t.Fatalf("the error message went into the page as HTML:\n%s", p.body)
	}
	if !strings.Contains(p.body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;") {
		t.Fatalf("the escaped message is missing:\n%s", p.body)
	}
	// Only the one external script is in any page.
	if n := strings.Count(p.body, "<script"); n != 1 || !strings.Contains(p.body, `<script src="/ui/static/console.js" defer></script>`) {
		t.Errorf("%d script elements", n)
	}
	// A rollout ID in an error page is escaped too.
	a := e.do("GET", "/ui/rollouts/"+url.PathEscape("<b>x</b>"), ck, nil)
	if strings.Contains(a.body, "<b>x</b>") {
		t.Errorf("rollout ID unescaped in the error page: %d\n%s", a.code, a.body)
	}
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t, Config{})
	e.rollout("r1", 1)
	ck, _ := e.signin(operatorToken)
	for _, path := range []string{"/ui/signin", "/ui/", "/ui/rollouts/r1", "/ui/rollouts/nope", "/ui/static/console.js", "/ui/static/console.css", "/ui/rollouts/r1/status", "/ui/nowhere"} {
		a := e.do("GET", path, ck, nil)
		if got := a.hdr.Get("Content-Security-Policy"); got != CSP {
			t.Errorf("%s: CSP %q", path, got)
		}
		if a.hdr.Get("X-Content-Type-Options") != "nosniff" || a.hdr.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", path, a.hdr)
		}
	}
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(CSP, want) {
			t.Errorf("CSP lacks %s", want)
		}
	}
	if strings.Contains(CSP, "unsafe-inline") || strings.Contains(CSP, "unsafe-eval") || strings.Contains(CSP, "http") {
		t.Errorf("CSP too loose: %s", CSP)
	}
	// No page has an inline style or script: the CSP would block them.
	p := e.do("GET", "/ui/rollouts/r1", ck, nil)
	for _, bad := range []*regexp.Regexp{regexp.MustCompile(`style=`), regexp.MustCompile(`<style`), regexp.MustCompile(`<script>`), regexp.MustCompile(` on[a-z]+=`), regexp.MustCompile(`https?://`)} {
		if bad.MatchString(p.body) {
			t.Errorf("page matches %s", bad)
		}
	}
	if a := e.do("GET", "/ui/static/console.js", nil, nil); !strings.HasPrefix(a.hdr.Get("Content-Type"), "text/javascript") {
		t.Errorf("console.js type %q", a.hdr.Get("Content-Type"))
	}
}

func TestOrganisationsPaged(t *testing.T) {
	const n, pageSize = 400, 25
	e := newEnv(t, Config{PageSize: pageSize})
	e.rollout("big", n)
	for i := 0; i < n; i += 4 {
		e.finish("big", i, failed("server_error", 503, "unavailable"))
	}
	ck, _ := e.signin(readerToken)
	orgRe := regexp.MustCompile(`data-org="([0-9A-Z]+)"`)
	nextRe := regexp.MustCompile(`<a href="([^"]+)" id="next-page"`)
	walk := func(first string) map[string]int {
		seen := map[string]int{}
		path, pages := first, 0
		for path != "" {
			pages++
			if pages > n {
				t.Fatal("paging does not end")
			}
			a := e.do("GET", path, ck, nil)
			if a.code != 200 {
				t.Fatalf("%s: %d", path, a.code)
			}
			rows := orgRe.FindAllStringSubmatch(a.body, -1)
			if len(rows) > 2*pageSize {
				t.Fatalf("%s: a page of %d rows", path, len(rows))
			}
			for _, m := range rows {
				seen[m[1]]++
			}
			path = ""
			if m := nextRe.FindStringSubmatch(a.body); m != nil {
				path = strings.ReplaceAll(m[1], "&amp;", "&")
			}
		}
		if pages < 2 {
			t.Fatalf("%s: one page only", first)
		}
		return seen
	}
	all := walk("/ui/rollouts/big")
	if len(all) != n {
		t.Fatalf("pages showed %d organisations, want %d", len(all), n)
	}
	onlyFailed := walk("/ui/rollouts/big?state=failed&class=server_error")
	if len(onlyFailed) != n/4 {
		t.Fatalf("failed pages showed %d organisations, want %d", len(onlyFailed), n/4)
	}
	for id := range onlyFailed {
		var i int
		if _, err := fmtSscan(id, &i); err != nil || i%4 != 0 {
			t.Fatalf("organisation %s is not a failed one", id)
		}
	}
	if a := e.do("GET", "/ui/rollouts/big?cursor=x", ck, nil); a.code != http.StatusBadRequest {
		t.Errorf("bad cursor: %d", a.code)
	}
	if a := e.do("GET", "/ui/rollouts/big?state=bogus", ck, nil); a.code != http.StatusBadRequest {
		t.Errorf("bad state: %d", a.code)
	}
}

func TestCSVOfTheFilter(t *testing.T) {
	e := newEnv(t, Config{})
	e.rollout("r1", 6)
	e.finish("r1", 0, failed("server_error", 500, "=HYPERLINK(\"x\")"))
	e.finish("r1", 1, failed("not_found", 404, "no such org"))
	e.finish("r1", 2, succeeded())
	ck, _ := e.signin(readerToken)
	a := e.do("GET", "/ui/rollouts/r1/organisations.csv?state=failed&class=server_error", ck, nil)
	if a.code != 200 || !strings.HasPrefix(a.hdr.Get("Content-Type"), "text/csv") || !strings.Contains(a.hdr.Get("Content-Disposition"), "r1-organisations.csv") {
		t.Fatalf("CSV: %d %v", a.code, a.hdr)
	}
	recs, err := csv.NewReader(strings.NewReader(a.body)).ReadAll()
	if err != nil || len(recs) != 2 || recs[0][0] != "org_id" || recs[1][0] != org(0) || recs[1][5] != `'=HYPERLINK("x")` {
		t.Fatalf("CSV rows %q, %v", recs, err)
	}
	a = e.do("GET", "/ui/rollouts/r1/organisations.csv", ck, nil)
	if recs, _ := csv.NewReader(strings.NewReader(a.body)).ReadAll(); len(recs) != 7 {
		t.Fatalf("unfiltered CSV: %d lines", len(recs))
	}
}

func TestOperatorActions(t *testing.T) {
	e := newEnv(t, Config{})
	e.rollout("r1", 10)
	for i := range 3 {
		e.finish("r1", i, failed("server_error", 500, "boom"))
	}
	e.finish("r1", 3, failed("not_found", 404, "gone"))
	e.finish("r1", 4, succeeded())
	ck, csrf := e.signin(operatorToken)
	p := e.do("GET", "/ui/rollouts/r1", ck, nil)
	for _, want := range []string{`id="retry-all"`, "Retry all 4 failed", `id="retry-class-server_error"`, `id="cancel"`, `id="pause"`} {
		if !strings.Contains(p.body, want) {
			t.Errorf("operator page lacks %s", want)
		}
	}
	// Each confirmation names what it touches, and its form carries the CSRF token.
	for q, want := range map[string]string{
		"action=retry":                    "Retry 4 organisations of rollout r1?",
		"action=retry&class=server_error": "Retry 3 organisations of rollout r1?",
		"action=cancel":                   "Cancel rollout r1?",
		"action=pause":                    "Pause queue imports?",
	} {
		a := e.do("GET", "/ui/rollouts/r1/confirm?"+q, ck, nil)
		if a.code != 200 || !strings.Contains(a.body, want) || csrfOf(t, a.body) != csrf {
			t.Errorf("confirm %s: %d, want %q\n%s", q, a.code, want, a.body)
		}
	}
	if a := e.do("GET", "/ui/rollouts/r1/confirm?action=explode", ck, nil); a.code != http.StatusBadRequest {
		t.Errorf("unknown action: %d", a.code)
	}
	a := e.do("POST", "/ui/rollouts/r1/retry", ck, url.Values{"csrf": {csrf}, "class": {"server_error"}})
	if a.code != http.StatusSeeOther || a.hdr.Get("Location") != "/ui/rollouts/r1?done=retry&n=3" {
		t.Fatalf("retry by class: %d %q", a.code, a.hdr.Get("Location"))
	}
	if c := e.counts("r1"); c.Failed != 1 || c.ByClass["not_found"] != 1 {
		t.Fatalf("after retry by class: %+v", c)
	}
	if p := e.do("GET", a.hdr.Get("Location"), ck, nil); !strings.Contains(p.body, "Retried 3 organisations") {
		t.Errorf("no flash after retry")
	}
	a = e.do("POST", "/ui/rollouts/r1/pause", ck, url.Values{"csrf": {csrf}})
	if a.code != http.StatusSeeOther || !e.m.QueuePaused(e.m.Queue()) {
		t.Fatalf("pause: %d paused %v", a.code, e.m.QueuePaused(e.m.Queue()))
	}
	if p := e.do("GET", "/ui/rollouts/r1", ck, nil); !strings.Contains(p.body, `id="resume"`) || !strings.Contains(p.body, `id="queue-state">paused`) {
		t.Errorf("paused queue not shown")
	}
	if a = e.do("POST", "/ui/rollouts/r1/resume", ck, url.Values{"csrf": {csrf}}); a.code != http.StatusSeeOther || e.m.QueuePaused(e.m.Queue()) {
		t.Fatalf("resume: %d", a.code)
	}
	a = e.do("POST", "/ui/rollouts/r1/cancel", ck, url.Values{"csrf": {csrf}})
	if a.code != http.StatusSeeOther || a.hdr.Get("Location") != "/ui/rollouts/r1?done=cancel&n=8" {
		t.Fatalf("cancel: %d %q", a.code, a.hdr.Get("Location"))
	}
	if c := e.counts("r1"); c.Cancelled != 8 || c.Pending != 0 {
		t.Fatalf("after cancel: %+v", c)
	}
	if a := e.do("POST", "/ui/rollouts/nope/cancel", ck, url.Values{"csrf": {csrf}}); a.code != http.StatusNotFound {
		t.Errorf("cancel unknown: %d", a.code)
	}
}

func TestListAndStatus(t *testing.T) {
	e := newEnv(t, Config{})
	e.rollout("r1", 4)
	e.finish("r1", 0, succeeded())
	e.finish("r1", 1, failed("timeout", 0, "deadline"))
	ck, _ := e.signin(readerToken)
	p := e.do("GET", "/ui/", ck, nil)
	for _, want := range []string{`href="/ui/rollouts/r1"`, `<progress max="4" value="2"`, connector, "1.4.0", "running"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("list lacks %q", want)
		}
	}
	a := e.do("GET", "/ui/rollouts/r1/status", ck, nil)
	var st struct {
		RolloutID string  `json:"rollout_id"`
		Total     int64   `json:"total"`
		Succeeded int64   `json:"succeeded"`
		Failed    int64   `json:"failed"`
		Finished  int64   `json:"finished"`
		State     string  `json:"state"`
		Breaker   string  `json:"breaker"`
		FleetRate float64 `json:"fleet_rate"`
	}
	if err := json.Unmarshal([]byte(a.body), &st); err != nil || st.Total != 4 || st.Succeeded != 1 || st.Failed != 1 || st.Finished != 2 || st.State != "running" || st.Breaker != "closed" {
		t.Fatalf("status: %d %s %+v %v", a.code, a.body, st, err)
	}
	if a := e.do("GET", "/ui/rollouts/r1/status", nil, nil); a.code != http.StatusUnauthorized {
		t.Errorf("status without session: %d", a.code)
	}
	if a := e.do("GET", "/ui/rollouts/nope/status", ck, nil); a.code != http.StatusNotFound {
		t.Errorf("status unknown: %d", a.code)
	}
}

// A rollout of waves shows its wave and, halted, its reason; an operator
// promotes it through a confirmation.
func TestWavesShownAndPromoted(t *testing.T) {
	e := newEnv(t, Config{})
	orgs := make([]string, 10)
	for i := range orgs {
		orgs[i] = org(i)
	}
	if _, _, err := e.m.EnqueueList(context.Background(), rollout.Spec{ID: "w", ConnectorID: connector, Version: "1.4.0", Waves: "2"}, slices.Values(orgs)); err != nil {
		t.Fatal(err)
	}
	ck, csrf := e.signin(operatorToken)
	p := e.do("GET", "/ui/rollouts/w", ck, nil)
	for _, want := range []string{`id="waves"`, "Wave <strong data-field=\"wave\">1</strong> of 2", `id="promote"`, "Release wave 2 now"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if a := e.do("GET", "/ui/rollouts/w/confirm?action=promote", ck, nil); a.code != 200 || !strings.Contains(a.body, "Release wave 2 of 2 of rollout w now?") {
		t.Fatalf("confirm promote: %d\n%s", a.code, a.body)
	}
	a := e.do("POST", "/ui/rollouts/w/promote", ck, url.Values{"csrf": {csrf}})
	if a.code != http.StatusSeeOther || a.hdr.Get("Location") != "/ui/rollouts/w?done=promote&n=2" {
		t.Fatalf("promote: %d %q", a.code, a.hdr.Get("Location"))
	}
	if p := e.do("GET", a.hdr.Get("Location"), ck, nil); strings.Contains(p.body, `id="promote"`) || !strings.Contains(p.body, "Released wave 2.") {
		t.Errorf("after promote: promote still offered, or no flash")
	}
}
