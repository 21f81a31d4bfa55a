package main

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/versori/import-worker/internal/apitoken"

	"github.com/versori/import-worker/console"
)

// TestConsoleMounted: cmd/api serves the console under /ui/ with its own
// sign-in, the API's tokens and the console's CSP; the API's routes keep
// their bearer tokens.
func TestConsoleMounted(t *testing.T) {
	h := newHarness(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(h.srv.URL + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/signin") || resp.Header.Get("Content-Security-Policy") != console.CSP {
		t.Fatalf("GET /ui/: %d %v", resp.StatusCode, resp.Header)
	}
	resp, err = client.PostForm(h.srv.URL+"/ui/signin", url.Values{"token": {readerToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 || !resp.Cookies()[0].Secure || !resp.Cookies()[0].HttpOnly {
		t.Fatalf("sign in through cmd/api: %d %v", resp.StatusCode, resp.Cookies())
	}
	// The session cookie is no bearer token for the API.
	req, _ := http.NewRequest("GET", h.srv.URL+"/v1/rollouts", nil)
	req.AddCookie(resp.Cookies()[0])
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("API with the console's cookie: %d", resp.StatusCode)
	}
}

func TestConsoleKeyConfig(t *testing.T) {
	env := map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0", "API_TOKENS_FILE": writeTokens(t), console.KeyEnv: "short"}
	_, errs := loadConfig(func(k string) string { return env[k] })
	if len(errs) != 1 || !strings.Contains(errs[0], console.KeyEnv) {
		t.Fatalf("short key: %v", errs)
	}
	env[console.KeyEnv] = strings.Repeat("x", 32)
	c, errs := loadConfig(func(k string) string { return env[k] })
	if len(errs) != 0 || string(c.consoleKey) != env[console.KeyEnv] || c.consoleKeyRandom {
		t.Fatalf("32-byte key: %v", errs)
	}
}

func writeTokens(t *testing.T) string {
	t.Helper()
	f := t.TempDir() + "/tokens"
	if err := os.WriteFile(f, []byte(apitoken.Line(apitoken.Reader, readerToken, "dash")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
