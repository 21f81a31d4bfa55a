package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/versori/import-worker/internal/apitoken"
	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/versori"
)

const (
	operatorToken = "vit_console-operator-token"
	readerToken   = "vit_console-reader-token"
	connector     = "01HZY3K8W0V6Q1B2C3D4E5F6G7"
)

func org(i int) string { return fmt.Sprintf("01J%023d", i) }

// env is a console on a real redis-server, with an operator token (ops)
// and a reader token (dash).
type env struct {
	t   *testing.T
	m   *rollout.Manager
	led *ledger.Ledger
	con *Console
	srv *httptest.Server
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	rs := redistest.Start(t, redistest.Options{})
	m := rollout.New(rs.Client(), rollout.Options{})
	es, err := apitoken.Parse(strings.NewReader(apitoken.Line(apitoken.Operator, operatorToken, "ops") + "\n" + apitoken.Line(apitoken.Reader, readerToken, "dash") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, m: m, led: m.Ledger()}
	cfg.Manager, cfg.Tokens = m, apitoken.NewSet(es)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e.con, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ui/", e.con)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

// rollout creates rollout id with n organisations, org(0) to org(n-1).
func (e *env) rollout(id string, n int) {
	e.t.Helper()
	orgs := make([]string, n)
	for i := range orgs {
		orgs[i] = org(i)
	}
	if _, _, err := e.m.EnqueueList(context.Background(), rollout.Spec{ID: id, ConnectorID: connector, Version: "1.4.0"}, slices.Values(orgs)); err != nil {
		e.t.Fatal(err)
	}
}

// finish records an outcome for organisation i, as a worker would.
func (e *env) finish(id string, i int, o ledger.Outcome) {
	e.t.Helper()
	o.CountAttempt = true
	if _, err := e.led.Finish(context.Background(), id, versori.OrgID(org(i)), o); err != nil {
		e.t.Fatal(err)
	}
}

func succeeded() ledger.Outcome {
	return ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, ConnectorID: connector, Version: "1.4.0"}
}

func failed(class string, status int, msg string) ledger.Outcome {
	return ledger.Outcome{State: ledger.Failed, Class: class, HTTPStatus: status, Error: msg}
}

func (e *env) counts(id string) ledger.Counts {
	e.t.Helper()
	_, c, err := e.m.Get(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

type answer struct {
	code int
	hdr  http.Header
	body string
	resp *http.Response
}

// do sends a request without following redirects. form, when not nil, is
// the urlencoded body; hdr are header name, value pairs.
func (e *env) do(method, path string, ck *http.Cookie, form url.Values, hdr ...string) answer {
	e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if ck != nil {
		req.AddCookie(ck)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, hdr: resp.Header, body: string(b), resp: resp}
}

// signin signs in with token and returns the session cookie and its CSRF
// token (read from a page's form).
func (e *env) signin(token string) (*http.Cookie, string) {
	e.t.Helper()
	a := e.do("POST", "/ui/signin", nil, url.Values{"token": {token}})
	if a.code != http.StatusSeeOther {
		e.t.Fatalf("sign in: %d %s", a.code, a.body)
	}
	var ck *http.Cookie
	for _, c := range a.resp.Cookies() {
		if c.Name == CookieName {
			ck = c
		}
	}
	if ck == nil {
		e.t.Fatal("sign in set no session cookie")
	}
	p := e.do("GET", "/ui/", ck, nil)
	return ck, csrfOf(e.t, p.body)
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", body)
	}
	return m[1]
}

func fmtSscan(id string, i *int) (int, error) {
	return fmt.Sscanf(strings.TrimPrefix(id, "01J"), "%d", i)
}
