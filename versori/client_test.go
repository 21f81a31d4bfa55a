package versori_test

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

// TestKeyNeverInErrors makes servers echo the request, Authorization
// header included, back in every place an error keeps text from: plain
// bodies, the API's JSON fields, HTML-escaped pages, headers and a redirect
// Location. No form of the key may survive into the error.
func TestKeyNeverInErrors(t *testing.T) {
	const key = `sk_live_<&>"'+/=Zx9_0123456789`
	forms := []string{key, html.EscapeString(key), url.QueryEscape(key), url.PathEscape(key), "Zx9_0123456789"}

	echo := func(w http.ResponseWriter, r *http.Request, status int, contentType, body string) {
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("X-Request-Id", r.Header.Get("Authorization"))
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
	custom := map[string]http.HandlerFunc{
		"html-escaped page": func(w http.ResponseWriter, r *http.Request) {
			echo(w, r, 502, "text/html", "<html><body><pre>"+html.EscapeString(r.Header.Get("Authorization"))+"</pre></body></html>")
		},
		"url-escaped text": func(w http.ResponseWriter, r *http.Request) {
			echo(w, r, 500, "text/plain", "auth="+url.QueryEscape(r.Header.Get("Authorization")))
		},
		"json-escaped broken json": func(w http.ResponseWriter, r *http.Request) {
			b, _ := jsonQuote(r.Header.Get("Authorization"))
			echo(w, r, 500, "application/json", `{"echo":`+b)
		},
		"json fields": func(w http.ResponseWriter, r *http.Request) {
			a, _ := jsonQuote(r.Header.Get("Authorization"))
			echo(w, r, 400, "application/json", `{"code":`+a+`,"message":`+a+`,"fields":[{"field":`+a+`,"message":`+a+`}],"details":`+a+`}`)
		},
		"redirect carrying the key": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", "https://"+url.PathEscape(key)+".evil.example/?k="+url.QueryEscape(key))
			w.WriteHeader(http.StatusFound)
		},
		"huge success body": func(w http.ResponseWriter, r *http.Request) {
			echo(w, r, 200, "application/json", `{"id":"`+strings.Repeat("x", 5<<20)+r.Header.Get("Authorization")+`"}`)
		},
		"success body not json": func(w http.ResponseWriter, r *http.Request) {
			echo(w, r, 200, "text/plain", "ok "+r.Header.Get("Authorization"))
		},
	}
	check := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("no error")
		}
		var apiErr *versori.Error
		errors.As(err, &apiErr)
		for _, out := range []string{err.Error(), fmt.Sprintf("%v|%+v|%#v", err, err, err), fmt.Sprintf("%#v", apiErr)} {
			for _, f := range forms {
				if strings.Contains(out, f) {
					t.Fatalf("error shows the key (as %q): %s", f, out)
				}
			}
		}
	}
	for name, h := range custom {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			defer srv.Close()
			c, err := versori.New(versori.Config{BaseURL: srv.URL, APIKey: key})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "1.0.0")
			check(t, err)
		})
	}
	for _, kind := range []versoritest.FaultKind{versoritest.FaultEcho, versoritest.FaultEchoJSON} {
		t.Run(string(kind), func(t *testing.T) {
			s := versoritest.NewServer(versoritest.WithAPIKey(key))
			defer s.Close()
			s.SetFault("", versoritest.Fault{Kind: kind})
			c, err := versori.New(versori.Config{BaseURL: s.URL, APIKey: key, AuthScheme: "jwt"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "1.0.0")
			check(t, err)
			if !strings.Contains(err.Error(), "[REDAC") {
				t.Errorf("error %q: the echo should show where the key was", err)
			}
		})
	}
}

func jsonQuote(s string) (string, error) {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '<' || r == '>' || r == '&':
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String(), nil
}

func TestRequestShape(t *testing.T) {
	var got atomic.Pointer[http.Request]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Clone(context.Background()))
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"c1","organisationId":"o","name":"n","public":false,"protocol":"http","baseUrl":"https://x",
			"authSchemeConfigs":[{"type":"api-key","deep":{"a":[1,2]}}],"connections":{"x":1},"versions":[{"id":"v","name":"1.0.0",
			"isLatest":true,"isDefault":false,"createdAt":"2025-01-02T03:04:05Z","updatedAt":"2025-01-02T03:04:05Z","publishedAt":null,
			"messages":[{"text":"t","severity":"warning","detail":[{"k":"v"}]}],"future":"field"}],"tags":{"k":["a","b"]},
			"createdAt":"2025-01-02T03:04:05Z","updatedAt":"2025-01-02T03:04:05Z","somethingNew":{"x":1}}`)
	}))
	defer srv.Close()
	c, err := versori.New(versori.Config{BaseURL: srv.URL + "/api/connect/v1/", APIKey: "k1", AuthScheme: "JWT", UserAgent: "ua/1"})
	if err != nil {
		t.Fatal(err)
	}
	org := newID()
	conn, err := c.ImportPublicConnectorVersion(t.Context(), org, fixedConnector, "v1 beta%?#")
	if err != nil {
		t.Fatal(err)
	}
	r := got.Load()
	wantPath := "/api/connect/v1/o/" + org.String() + "/connectors/" + fixedConnector + "/versions/v1%20beta%25%3F%23/library/import"
	if r.Method != http.MethodPost || r.URL.EscapedPath() != wantPath || r.URL.RawQuery != "" {
		t.Errorf("request %s %s?%s, want POST %s", r.Method, r.URL.EscapedPath(), r.URL.RawQuery, wantPath)
	}
	if a := r.Header.Get("Authorization"); a != "JWT k1" {
		t.Errorf("Authorization = %q", a)
	}
	if ua := r.Header.Get("User-Agent"); ua != "ua/1" {
		t.Errorf("User-Agent = %q", ua)
	}
	if conn.ID != "c1" || len(conn.Versions) != 1 || conn.Versions[0].PublishedAt != nil || string(conn.AuthSchemeConfigs) != `[{"type":"api-key","deep":{"a":[1,2]}}]` ||
		conn.Tags["k"][1] != "b" || conn.Versions[0].Messages[0].Severity != "warning" || conn.Versions[0].CreatedAt.Year() != 2025 {
		t.Errorf("decoded %+v", conn)
	}

	c, _ = versori.New(versori.Config{BaseURL: srv.URL, APIKey: "k1"})
	if _, err := c.ImportPublicConnectorVersion(t.Context(), org, fixedConnector, "1"); err != nil {
		t.Fatal(err)
	}
	if a, ua := got.Load().Header.Get("Authorization"), got.Load().Header.Get("User-Agent"); a != "Bearer k1" || !strings.HasPrefix(ua, "versori-import-worker/") {
		t.Errorf("defaults: Authorization %q, User-Agent %q", a, ua)
	}
}

// TestInvalidInputSendsNothing checks IDs and versions are refused before
// any request: a bad ID cannot be parsed (ParseOrgID, the edge), a zero
// one and a bad version name are refused by the client.
func TestInvalidInputSendsNothing(t *testing.T) {
	s, c := newPair(t)
	if _, err := versori.ParseOrgID("../../admin"); err == nil {
		t.Error("ParseOrgID accepted a path")
	}
	if _, err := versori.ParseConnectorID("01J8Z3K4M5N6P7Q8R9S0T1V2W3/../x"); err == nil {
		t.Error("ParseConnectorID accepted a path")
	}
	for _, in := range []struct {
		org       versori.OrgID
		connector versori.ConnectorID
		version   string
	}{
		{"", fixedConnector, "1"},
		{newID(), "", "1"},
		{newID(), fixedConnector, ".."},
		{newID(), fixedConnector, "a/b"},
		{newID(), fixedConnector, ""},
	} {
		_, err := c.ImportPublicConnectorVersion(t.Context(), in.org, in.connector, in.version)
		var idErr *versori.InvalidIDError
		if !errors.As(err, &idErr) || versori.Classify(err) != versori.ClassInvalid {
			t.Errorf("import %+v: err %v, want *InvalidIDError", in, err)
		}
		if _, err := c.GetConnectorVersion(t.Context(), in.org, in.connector, in.version); !errors.As(err, &idErr) {
			t.Errorf("get %+v: err %v", in, err)
		}
	}
	if _, err := c.ListConnectorVersions(t.Context(), "", fixedConnector, versori.PageOptions{}); versori.Classify(err) != versori.ClassInvalid {
		t.Errorf("list versions without an org: %v", err)
	}
	if n := s.Requests(); n != 0 {
		t.Errorf("the fake saw %d requests", n)
	}
}

func TestRedirects(t *testing.T) {
	var otherHits atomic.Int32
	var otherAuth atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		otherAuth.Store(r.Header.Get("Authorization"))
		w.WriteHeader(200)
		_, _ = io.WriteString(w, `{"id":"stolen"}`)
	}))
	defer other.Close()
	// "localhost" and "127.0.0.1" are different hosts to the client.
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)

	var sameHits atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/moved/") && r.Method == http.MethodPost && r.Header.Get("Authorization") == "Bearer k":
			sameHits.Add(1)
			_, _ = io.WriteString(w, `{"id":"moved"}`)
		case strings.Contains(r.URL.Path, "/versions/other-307/"):
			http.Redirect(w, r, otherURL+"/steal", http.StatusTemporaryRedirect)
		case strings.Contains(r.URL.Path, "/versions/same-308/"):
			http.Redirect(w, r, "/moved"+r.URL.Path, http.StatusPermanentRedirect)
		case strings.Contains(r.URL.Path, "/versions/same-302/"):
			http.Redirect(w, r, "/moved"+r.URL.Path, http.StatusFound)
		case strings.Contains(r.URL.Path, "/versions/loop/"):
			http.Redirect(w, r, r.URL.Path, http.StatusTemporaryRedirect)
		default:
			w.WriteHeader(400)
		}
	}))
	defer api.Close()
	c, err := versori.New(versori.Config{BaseURL: api.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	_, err = c.ImportPublicConnectorVersion(ctx, newID(), fixedConnector, "other-307")
	var apiErr *versori.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 307 || versori.Classify(err) != versori.ClassServerError || !strings.Contains(err.Error(), "redirect not followed (to http://localhost:") {
		t.Errorf("redirect to another host: %v", err)
	}
	if otherHits.Load() != 0 {
		t.Errorf("the other host was called (Authorization %q)", otherAuth.Load())
	}

	if got, err := c.ImportPublicConnectorVersion(ctx, newID(), fixedConnector, "same-308"); err != nil || got.ID != "moved" || sameHits.Load() != 1 {
		t.Errorf("308 on the same host: %v, %v", got, err)
	}
	if _, err := c.ImportPublicConnectorVersion(ctx, newID(), fixedConnector, "same-302"); !errors.As(err, &apiErr) || apiErr.StatusCode != 302 {
		t.Errorf("302 would turn the POST into a GET and must not be followed: %v", err)
	}
	if _, err := c.ImportPublicConnectorVersion(ctx, newID(), fixedConnector, "loop"); !errors.As(err, &apiErr) || apiErr.StatusCode != 307 {
		t.Errorf("redirect loop: %v", err)
	}

	// A caller's own http.Client gets the same policy, and is not changed.
	hc := &http.Client{}
	c, _ = versori.New(versori.Config{BaseURL: api.URL, APIKey: "k", HTTPClient: hc})
	if _, err := c.ImportPublicConnectorVersion(ctx, newID(), fixedConnector, "other-307"); !errors.As(err, &apiErr) || otherHits.Load() != 0 {
		t.Errorf("custom client followed a redirect: %v", err)
	}
	if hc.CheckRedirect != nil {
		t.Error("New modified the caller's http.Client")
	}
}

// heapGrowth runs f and returns how much the heap grew at its peak,
// sampled while f runs.
func heapGrowth(f func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		var m runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > base && m.HeapAlloc-base > peak.Load() {
				peak.Store(m.HeapAlloc - base)
			}
		}
	}()
	f()
	close(done)
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > base && ms.HeapAlloc-base > peak.Load() {
		peak.Store(ms.HeapAlloc - base)
	}
	return peak.Load()
}

// TestOversizedBodies sends 50 MiB bodies, declared and chunked, as errors
// and as success; the client must not read them into memory.
func TestOversizedBodies(t *testing.T) {
	const size = 50 << 20
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = 'a'
	}
	var sent atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := 200
		if strings.Contains(r.URL.Path, "/versions/error") {
			status = 502
		}
		if strings.Contains(r.URL.Path, "declared") {
			w.Header().Set("Content-Length", fmt.Sprint(size))
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"id":"`))
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			sent.Add(int64(len(chunk)))
		}
	}))
	defer srv.Close()
	c, err := versori.New(versori.Config{BaseURL: srv.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	for _, version := range []string{"ok-chunked", "ok-declared", "error-chunked", "error-declared"} {
		t.Run(version, func(t *testing.T) {
			var err error
			grew := heapGrowth(func() {
				_, err = c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, version)
			})
			if versori.Classify(err) != versori.ClassServerError {
				t.Fatalf("class %s: %v", versori.Classify(err), err)
			}
			if grew > 16<<20 {
				t.Errorf("heap grew %d MiB for a 50 MiB body", grew>>20)
			}
			if strings.HasPrefix(version, "ok") && !strings.Contains(err.Error(), "larger than") {
				t.Errorf("error %v does not say the body was too large", err)
			}
		})
	}

	s, c := newPair(t)
	s.FailNext("", 1, versoritest.Fault{Kind: versoritest.FaultOversized})
	org := newID()
	var apiErr *versori.Error
	grew := heapGrowth(func() {
		_, err = c.ImportPublicConnectorVersion(t.Context(), org, fixedConnector, "1")
	})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 502 || utf8.RuneCountInString(apiErr.BodyExcerpt) > 200 || grew > 16<<20 {
		t.Errorf("fake's oversized body: %v (heap grew %d MiB)", err, grew>>20)
	}
	if s.ImportsOf(string(org)) != 0 {
		t.Error("the oversized fault carried the import out")
	}
}

func TestHTMLErrorExcerpt(t *testing.T) {
	s, c := newPair(t)
	s.FailNext("", 1, versoritest.Fault{Kind: versoritest.FaultHTML})
	_, err := c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "1")
	var apiErr *versori.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v", err)
	}
	ex := apiErr.BodyExcerpt
	if ex != "502 Bad Gateway 502 Bad Gateway nginx" {
		t.Errorf("excerpt %q", ex)
	}
	if apiErr.Class != versori.ClassServerError || apiErr.StatusCode != 502 || apiErr.Code != "" || apiErr.Message != "" || apiErr.RequestID == "" {
		t.Errorf("error %#v", apiErr)
	}
	if strings.ContainsAny(err.Error(), "<>\n") {
		t.Errorf("Error() keeps markup or newlines: %q", err)
	}
}

func TestSuccessBodyProblems(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/versions/garbage/"):
			_, _ = io.WriteString(w, "<html>hello</html>")
		case strings.Contains(r.URL.Path, "/versions/stall/"):
			w.Header().Set("Content-Length", "1000")
			_, _ = io.WriteString(w, `{"id":`)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case strings.Contains(r.URL.Path, "/versions/cut/"):
			w.Header().Set("Content-Length", "1000")
			_, _ = io.WriteString(w, `{"id":`)
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		}
	}))
	defer srv.Close()
	c, _ := versori.New(versori.Config{BaseURL: srv.URL, APIKey: "k"})
	_, err := c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "garbage")
	var apiErr *versori.Error
	if !errors.As(err, &apiErr) || apiErr.Class != versori.ClassServerError || apiErr.StatusCode != 200 || apiErr.BodyExcerpt != "hello" {
		t.Errorf("garbage 200: %#v", err)
	}
	// Headers arrive, then the body stalls past the call's timeout.
	cs, _ := versori.New(versori.Config{BaseURL: srv.URL, APIKey: "k", Timeout: 200 * time.Millisecond})
	_, err = cs.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "stall")
	if versori.Classify(err) != versori.ClassTimeout || errors.As(err, &apiErr) {
		t.Errorf("body stalled: %s %v", versori.Classify(err), err)
	}
	_, err = c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "cut")
	if versori.Classify(err) != versori.ClassNetwork || errors.As(err, &apiErr) {
		t.Errorf("body cut short: %s %v", versori.Classify(err), err)
	}
}

func TestTransportFailures(t *testing.T) {
	// Connection refused: a port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, _ := versori.New(versori.Config{BaseURL: "http://" + addr, APIKey: "k"})
	if _, err := c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "1"); versori.Classify(err) != versori.ClassNetwork {
		t.Errorf("refused: %s %v", versori.Classify(err), err)
	}

	// TLS: a server whose certificate the client does not trust.
	tlsSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	c, _ = versori.New(versori.Config{BaseURL: tlsSrv.URL, APIKey: "k"})
	if _, err := c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "1"); versori.Classify(err) != versori.ClassNetwork {
		t.Errorf("untrusted TLS: %s %v", versori.Classify(err), err)
	}

	// The caller cancels (shutdown): the outcome is unknown, so network.
	s, c := newPair(t)
	s.SetFault("", versoritest.Fault{Kind: versoritest.FaultHang})
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := c.ImportPublicConnectorVersion(ctx, newID(), fixedConnector, "1"); versori.Classify(err) != versori.ClassNetwork || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %s %v", versori.Classify(err), err)
	}
	// The caller's own deadline is a timeout.
	ctx, cancel2 := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel2()
	if _, err := c.ImportPublicConnectorVersion(ctx, newID(), fixedConnector, "1"); versori.Classify(err) != versori.ClassTimeout {
		t.Errorf("caller deadline: %s %v", versori.Classify(err), err)
	}
}

// TestRetryAfterAmbiguousTimeout is the reason 409 counts as success: a
// call that timed out after the import was done is retried, and the retry
// meets a 409.
func TestRetryAfterAmbiguousTimeout(t *testing.T) {
	s := versoritest.NewServer()
	defer s.Close()
	cfg := s.ClientConfig()
	// Long enough for the request to reach the fake on a loaded machine.
	cfg.Timeout = time.Second
	c, _ := versori.New(cfg)
	org := newID()
	s.FailNext(string(org), 1, versoritest.Fault{Kind: versoritest.FaultSlowImport})
	_, err := c.ImportPublicConnectorVersion(t.Context(), org, fixedConnector, "1")
	if versori.Classify(err) != versori.ClassTimeout {
		t.Fatalf("first call: %v", err)
	}
	_, err = c.ImportPublicConnectorVersion(t.Context(), org, fixedConnector, "1")
	if cl := versori.Classify(err); cl != versori.ClassAlreadyPresent || !cl.Succeeded() {
		t.Fatalf("retry: %s %v", cl, err)
	}
	if s.ImportsOf(string(org)) != 1 || s.ConflictsOf(string(org)) != 1 || s.Calls(string(org)) != 2 {
		t.Errorf("imports %d conflicts %d calls %d", s.ImportsOf(string(org)), s.ConflictsOf(string(org)), s.Calls(string(org)))
	}
}

func TestLookups(t *testing.T) {
	conn2 := "01J8Z3K4M5N6P7Q8R9S0T1V2W4"
	s, c := newPair(t,
		versoritest.WithConnector(versoritest.PublicConnector{ID: fixedConnector, Name: "Shopify", Versions: []string{"1.0.0", "1.1.0", "2.0.0"}, Default: "1.1.0"}),
		versoritest.WithConnector(versoritest.PublicConnector{ID: conn2, Name: "Slack", Versions: []string{"0.1.0"}}),
	)
	ctx := t.Context()
	org := newID()
	var apiErr *versori.Error
	if _, err := c.GetConnectorVersion(ctx, org, fixedConnector, "2.0.0"); versori.Classify(err) != versori.ClassNotFound {
		t.Errorf("before import: %v", err)
	}
	if _, err := c.ImportPublicConnectorVersion(ctx, org, fixedConnector, "9.9.9"); versori.Classify(err) != versori.ClassNotFound {
		t.Errorf("unknown version: %v", err)
	}
	got, err := c.ImportPublicConnectorVersion(ctx, org, fixedConnector, "latest")
	if err != nil || got.Name != "Shopify" || got.Versions[0].Name != "2.0.0" {
		t.Fatalf("import latest: %+v %v", got, err)
	}
	if _, err := c.ImportPublicConnectorVersion(ctx, org, fixedConnector, "default"); err != nil {
		t.Fatalf("import default: %v", err)
	}
	if _, err := c.ImportPublicConnectorVersion(ctx, org, fixedConnector, "2.0.0"); versori.Classify(err) != versori.ClassAlreadyPresent || !errors.As(err, &apiErr) || apiErr.Code != "conflict" {
		t.Errorf("import 2.0.0 after latest: %v", err)
	}
	v, err := c.GetConnectorVersion(ctx, org, fixedConnector, "1.1.0")
	if err != nil || v.Name != "1.1.0" || v.PublishedAt != nil {
		t.Errorf("get version: %+v %v", v, err)
	}
	vp, err := c.ListConnectorVersions(ctx, org, fixedConnector, versori.PageOptions{First: 1})
	if err != nil || vp.TotalCount != 2 || len(vp.Items) != 1 || vp.Items[0].Name != "1.1.0" || vp.Next == "" {
		t.Fatalf("list versions: %+v %v", vp, err)
	}
	vp, err = c.ListConnectorVersions(ctx, org, fixedConnector, versori.PageOptions{First: 1, After: vp.Next})
	if err != nil || len(vp.Items) != 1 || vp.Items[0].Name != "2.0.0" || vp.Next != "" || vp.Prev == "" {
		t.Fatalf("list versions page 2: %+v %v", vp, err)
	}

	page, err := c.ListPublicConnectors(ctx, versori.PageOptions{First: 1})
	if err != nil || page.TotalCount != 2 || len(page.Items) != 1 || page.Items[0].ID != fixedConnector || page.Next == "" ||
		len(page.Items[0].Versions) != 3 || page.Items[0].Versions[0].PublishedAt == nil || !page.Items[0].Versions[1].IsDefault {
		t.Fatalf("catalogue page 1: %+v %v", page, err)
	}
	page, err = c.ListPublicConnectors(ctx, versori.PageOptions{First: 1, After: page.Next})
	if err != nil || len(page.Items) != 1 || page.Items[0].ID != conn2 || page.Next != "" {
		t.Fatalf("catalogue page 2: %+v %v", page, err)
	}
	page, err = c.ListPublicConnectors(ctx, versori.PageOptions{First: 5, Before: conn2})
	if err != nil || len(page.Items) != 1 || page.Items[0].ID != fixedConnector {
		t.Fatalf("catalogue before: %+v %v", page, err)
	}
	if _, err := c.ListPublicConnectors(ctx, versori.PageOptions{First: 1000}); versori.Classify(err) != versori.ClassInvalid {
		t.Errorf("page size 1000: %v", err)
	}
	s.SetOutage(true)
	if _, err := c.ListPublicConnectors(ctx, versori.PageOptions{}); versori.Classify(err) != versori.ClassServerError {
		t.Errorf("catalogue in an outage: %v", err)
	}
}

// TestEmptySuccessBody: a 204, or a 200 with an empty or blank body, is
// imported (the status says it happened; a retry would meet a 409) with a
// Connector whose empty ID records that no answer came. A lookup cannot
// use an empty body: there it is a server_error.
func TestEmptySuccessBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-RateLimit-Remaining", "5")
		switch {
		case strings.Contains(r.URL.Path, "/versions/nocontent"):
			w.WriteHeader(http.StatusNoContent)
		case strings.Contains(r.URL.Path, "/versions/blank"):
			_, _ = io.WriteString(w, " \r\n\t ")
		case strings.Contains(r.URL.Path, "/versions/empty"):
			w.Header().Set("Content-Length", "0")
		}
	}))
	defer srv.Close()
	c, _ := versori.New(versori.Config{BaseURL: srv.URL, APIKey: "k"})
	for _, v := range []string{"nocontent", "blank", "empty"} {
		conn, err := c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, v)
		if err != nil || versori.Classify(err) != versori.ClassImported {
			t.Fatalf("%s: %s %v", v, versori.Classify(err), err)
		}
		if conn == nil || conn.ID != "" || conn.RateLimit.Remaining != 5 {
			t.Errorf("%s: connector %+v, want an empty one with the rate limit", v, conn)
		}
	}
	_, err := c.GetConnectorVersion(t.Context(), newID(), fixedConnector, "empty")
	var apiErr *versori.Error
	if !errors.As(err, &apiErr) || apiErr.Class != versori.ClassServerError || apiErr.Message != "empty response body" {
		t.Errorf("empty lookup body: %#v", err)
	}
}
