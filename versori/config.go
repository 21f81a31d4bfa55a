package versori

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/versori/import-worker/internal/buildinfo"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultBaseURL          = "https://platform.versori.com/api/connect/v1"
	DefaultAuthScheme       = "Bearer"
	DefaultTimeout          = 30 * time.Second
	DefaultMaxConnsPerHost  = 20
	DefaultMaxResponseBytes = 4 << 20
)

// Config configures a Client. The zero value of every field except the key
// means its default. Config never prints its key: String, GoString and
// Format redact it, so a Config can be logged whole.
type Config struct {
	// BaseURL is the API's base URL, DefaultBaseURL when empty. It must be
	// https, except for loopback hosts (localhost, 127.0.0.0/8, ::1), which
	// may use plain http so tests and the demo can run a local fake.
	BaseURL string
	// APIKey is the key sent in the Authorization header. Exactly one of
	// APIKey and APIKeyFile must be set.
	APIKey string
	// APIKeyFile names a file holding the key (surrounding whitespace, such
	// as a trailing newline, is ignored). It is read once, by New.
	APIKeyFile string
	// AuthScheme is "Bearer" (API keys, the default) or "JWT" (tokens signed
	// with an organisation signing key); matched case-insensitively.
	AuthScheme string
	// Timeout bounds each call, from sending the request to reading the
	// whole response. DefaultTimeout when zero.
	Timeout time.Duration
	// MaxConnsPerHost sizes the pool of idle connections kept to the API;
	// set it to the worker's concurrency so every handler can reuse a
	// connection (Go's default of 2 measured 0.70x the throughput of a
	// sized pool). It does not cap open connections: a call never queues
	// behind the pool. DefaultMaxConnsPerHost when zero. Ignored when
	// HTTPClient is set.
	MaxConnsPerHost int
	// UserAgent is sent with every request; "versori-import-worker/<version>"
	// when empty.
	UserAgent string
	// HTTPClient replaces the client built from the fields above, for
	// tests. New copies it and installs its own redirect policy on the
	// copy, so the key still never follows a redirect to another host.
	HTTPClient *http.Client
	// MaxResponseBytes bounds how much of a response body is read; a larger
	// success body is an error (ClassServerError). Error bodies are read
	// only up to 64 KiB, since only an excerpt is kept.
	// DefaultMaxResponseBytes when zero.
	MaxResponseBytes int64
}

const redacted = "[REDACTED]"

// String describes the configuration with the key redacted.
func (c Config) String() string {
	key := ""
	if c.APIKey != "" {
		key = redacted
	}
	return fmt.Sprintf("versori.Config{BaseURL: %q, APIKey: %q, APIKeyFile: %q, AuthScheme: %q, Timeout: %s, MaxConnsPerHost: %d, UserAgent: %q, HTTPClient: %t, MaxResponseBytes: %d}",
		c.BaseURL, key, c.APIKeyFile, c.AuthScheme, c.Timeout, c.MaxConnsPerHost, c.UserAgent, c.HTTPClient != nil, c.MaxResponseBytes)
}

// GoString is String: %#v must not print the key either.
func (c Config) GoString() string { return c.String() }

// Format prints String for every verb, so no verb or flag (%v, %+v, %#v,
// %s, %q, %x) can reach the key through reflection.
func (c Config) Format(f fmt.State, verb rune) { formatRedacted(f, verb, c.String()) }

func formatRedacted(f fmt.State, verb rune, s string) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", s)
	default:
		_, _ = f.Write([]byte(s))
	}
}

// resolved is a validated Config with defaults applied and the key loaded.
type resolved struct {
	base      string
	scheme    string
	key       string
	timeout   time.Duration
	conns     int
	userAgent string
	maxBody   int64
}

// resolve validates cfg and applies defaults. Errors name the setting in
// words ("base URL", "API key") so each program can map them to its own
// flag or variable names.
func (cfg Config) resolve() (resolved, error) {
	r := resolved{
		base:      cfg.BaseURL,
		timeout:   cfg.Timeout,
		conns:     cfg.MaxConnsPerHost,
		userAgent: cfg.UserAgent,
		maxBody:   cfg.MaxResponseBytes,
	}
	if r.base == "" {
		r.base = DefaultBaseURL
	}
	base, err := checkBaseURL(r.base)
	if err != nil {
		return r, err
	}
	r.base = base

	switch strings.ToLower(cfg.AuthScheme) {
	case "", "bearer":
		r.scheme = "Bearer"
	case "jwt":
		r.scheme = "JWT"
	default:
		return r, fmt.Errorf("auth scheme %q: must be Bearer or JWT", cfg.AuthScheme)
	}

	switch {
	case cfg.APIKey != "" && cfg.APIKeyFile != "":
		return r, errors.New("API key: set the key or the key file, not both")
	case cfg.APIKeyFile != "":
		b, err := readKeyFile(cfg.APIKeyFile, keyFileTimeout)
		if err != nil {
			return r, err
		}
		r.key = strings.TrimSpace(string(b))
		if r.key == "" {
			return r, fmt.Errorf("API key file %s: file is empty", cfg.APIKeyFile)
		}
	case cfg.APIKey != "":
		r.key = strings.TrimSpace(cfg.APIKey)
	default:
		return r, errors.New("API key: required (set the key or a key file)")
	}
	if err := checkKey(r.key); err != nil {
		return r, err
	}

	switch {
	case r.timeout == 0:
		r.timeout = DefaultTimeout
	case r.timeout < 0:
		return r, fmt.Errorf("timeout %s: must be positive", cfg.Timeout)
	}
	switch {
	case r.conns == 0:
		r.conns = DefaultMaxConnsPerHost
	case r.conns < 0:
		return r, fmt.Errorf("max connections per host %d: must be positive", cfg.MaxConnsPerHost)
	}
	switch {
	case r.maxBody == 0:
		r.maxBody = DefaultMaxResponseBytes
	case r.maxBody < 0:
		return r, fmt.Errorf("max response bytes %d: must be positive", cfg.MaxResponseBytes)
	}
	if r.userAgent == "" {
		r.userAgent = "versori-import-worker/" + buildinfo.Version
	} else if strings.ContainsAny(r.userAgent, "\r\n") {
		return r, errors.New("user agent: must be one line")
	}
	return r, nil
}

// Bounds on reading Config.APIKeyFile. A key is a short line; a longer file
// is the wrong file (VERSORI_API_KEY_FILE=/dev/zero read 1.4 GB in 3 s), and
// a FIFO nobody writes to would hang the start without a word.
const (
	maxKeyFileBytes = 4 << 10
	keyFileTimeout  = 5 * time.Second
)

// readKeyFile reads the key file, refusing one longer than maxKeyFileBytes
// and giving up after timeout. On a timeout the read is left to finish (or
// block) in its goroutine: the file is a FIFO or a stalled mount, and the
// caller stops at the error anyway. Errors name the path, which is not
// secret, and never the contents.
func readKeyFile(path string, timeout time.Duration) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		f, err := os.Open(path)
		if err != nil {
			done <- result{err: fmt.Errorf("API key file: %w", err)}
			return
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
		switch {
		case err != nil:
			err = fmt.Errorf("API key file: %w", err)
		case len(b) > maxKeyFileBytes:
			b, err = nil, fmt.Errorf("API key file %s: longer than %d bytes; a key is one short line (is it the right file?)", path, maxKeyFileBytes)
		}
		done <- result{b, err}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case res := <-done:
		return res.b, res.err
	case <-timer.C:
		return nil, fmt.Errorf("API key file %s: no key read within %s (a FIFO nobody writes to, or a stalled file system?)", path, timeout)
	}
}

// checkKey refuses keys that cannot be sent in a header. The message never
// includes the key.
func checkKey(key string) error {
	for _, r := range key {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return errors.New("API key: contains whitespace, control or non-ASCII characters")
		}
	}
	return nil
}

// checkBaseURL validates a base URL and returns it without a trailing slash.
func checkBaseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("base URL: %w", err)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return "", fmt.Errorf("base URL %q: scheme must be https", raw)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("base URL %q: has no host", raw)
	case u.User != nil:
		// Credentials in the URL would end up in every transport error.
		return "", errors.New("base URL: must not contain credentials")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", fmt.Errorf("base URL %q: must not have a query or fragment", raw)
	case u.Scheme == "http" && !IsLoopbackHost(u.Hostname()):
		return "", fmt.Errorf("base URL %q: plain http is allowed only for loopback hosts (localhost, 127.0.0.0/8, ::1); use https", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// IsLoopbackHost reports whether host (without port) is "localhost" or a
// loopback IP address (127.0.0.0/8, ::1).
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
