package versori_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/versori/import-worker/versori"
)

func TestNewRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const key = "sk_test_abcdef"
	tests := []struct {
		name string
		cfg  versori.Config
		want string
	}{
		{"plain http to a remote host", versori.Config{BaseURL: "http://platform.versori.com/api/connect/v1", APIKey: key}, "plain http is allowed only for loopback"},
		{"plain http to a private address", versori.Config{BaseURL: "http://10.0.0.1:8080", APIKey: key}, "loopback"},
		{"plain http to a look-alike", versori.Config{BaseURL: "http://localhost.evil.com", APIKey: key}, "loopback"},
		{"plain http to 0.0.0.0", versori.Config{BaseURL: "http://0.0.0.0:8081", APIKey: key}, "loopback"},
		{"ftp", versori.Config{BaseURL: "ftp://platform.versori.com", APIKey: key}, "scheme must be https"},
		{"no scheme", versori.Config{BaseURL: "platform.versori.com/api", APIKey: key}, "scheme must be https"},
		{"no host", versori.Config{BaseURL: "https:///api", APIKey: key}, "has no host"},
		{"credentials", versori.Config{BaseURL: "https://user:pw@platform.versori.com", APIKey: key}, "must not contain credentials"},
		{"query", versori.Config{BaseURL: "https://platform.versori.com/api?x=1", APIKey: key}, "query or fragment"},
		{"unparseable", versori.Config{BaseURL: "https://[::1", APIKey: key}, "base URL"},
		{"no key", versori.Config{}, "API key: required"},
		{"both key and file", versori.Config{APIKey: key, APIKeyFile: empty}, "not both"},
		{"missing key file", versori.Config{APIKeyFile: filepath.Join(dir, "nope")}, "API key file"},
		{"empty key file", versori.Config{APIKeyFile: empty}, "file is empty"},
		{"key with a space", versori.Config{APIKey: "sk test"}, "API key: contains whitespace"},
		{"key with a newline", versori.Config{APIKey: "sk\r\nX-Evil: 1"}, "API key: contains"},
		{"bad scheme", versori.Config{APIKey: key, AuthScheme: "Basic"}, `auth scheme "Basic"`},
		{"negative timeout", versori.Config{APIKey: key, Timeout: -time.Second}, "timeout"},
		{"negative conns", versori.Config{APIKey: key, MaxConnsPerHost: -1}, "max connections per host"},
		{"negative max body", versori.Config{APIKey: key, MaxResponseBytes: -1}, "max response bytes"},
		{"two-line user agent", versori.Config{APIKey: key, UserAgent: "a\nb"}, "user agent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := versori.New(tc.cfg)
			if err == nil {
				t.Fatalf("New accepted %v: %v", tc.cfg, c)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "versori: ") {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			for _, secret := range []string{key, "sk test", "X-Evil"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains the key", err)
				}
			}
		})
	}
}

func TestNewAcceptsLoopbackHTTPAndDefaults(t *testing.T) {
	for _, base := range []string{"http://localhost:8081/api/connect/v1/", "http://LOCALHOST", "http://127.0.0.1:1", "http://127.9.8.7", "http://[::1]:8081", "https://platform-staging.versori.com/api/connect/v1"} {
		c, err := versori.New(versori.Config{BaseURL: base, APIKey: "k"})
		if err != nil {
			t.Errorf("New(%q): %v", base, err)
			continue
		}
		if strings.HasSuffix(c.BaseURL(), "/") {
			t.Errorf("BaseURL %q keeps a trailing slash", c.BaseURL())
		}
	}
	c, err := versori.New(versori.Config{APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseURL() != versori.DefaultBaseURL {
		t.Errorf("default base URL = %q", c.BaseURL())
	}
	c.CloseIdleConnections()
}

func TestKeyFile(t *testing.T) {
	s, _ := newPair(t)
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte(s.APIKey()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := versori.New(versori.Config{BaseURL: s.URL, APIKeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "1.0.0"); err != nil {
		t.Fatalf("import with a key from a file: %v", err)
	}
}

// TestKeyNeverPrinted prints a Config and a Client under every verb and
// flag, directly, through pointers and nested in other values.
func TestKeyNeverPrinted(t *testing.T) {
	const key = "sk_live_SuperSecret_0123456789"
	cfg := versori.Config{BaseURL: "http://127.0.0.1:1", APIKey: key, Timeout: time.Second, HTTPClient: &http.Client{}}
	c, err := versori.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	type wrapper struct {
		Cfg    versori.Config
		CfgPtr *versori.Config
		Client *versori.Client
		Any    any
	}
	values := []any{cfg, &cfg, c, *c, wrapper{cfg, &cfg, c, c}, []any{cfg, c}, map[string]any{"c": c, "cfg": cfg}}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%T", "%10v", "%-v", "%d"} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, key) || strings.Contains(out, fmt.Sprintf("%x", key)) || strings.Contains(out, fmt.Sprintf("%X", key)) {
				t.Errorf("Sprintf(%q, %T) leaks the key: %s", verb, v, out)
			}
		}
	}
	if s := fmt.Sprint(cfg); !strings.Contains(s, "[REDACTED]") || !strings.Contains(s, "127.0.0.1") {
		t.Errorf("Config prints as %s: want the URL and a redaction marker", s)
	}
	if s := fmt.Sprint((*versori.Client)(nil)); s != "<nil>" {
		t.Errorf("nil client prints as %s", s)
	}
	if s := fmt.Sprint(versori.Config{}); strings.Contains(s, "[REDACTED]") {
		t.Errorf("an empty key prints as redacted: %s", s)
	}
}
