package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/e2etest"
	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/versori/versoritest"
)

// rawRequest writes req on a fresh connection to addr and returns the status
// code of the answer, or 0 if the server closed the connection without one.
func rawRequest(t *testing.T, addr, req string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// The server may answer and close before reading everything; a write
	// error then is part of the refusal, not a test failure.
	_, _ = io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestReliabilityListenerExposesNothingElse: the metrics listener serves
// /metrics, /healthz and /readyz and nothing else unless ENABLE_PPROF is
// set, and refuses huge headers and request bodies.
func TestReliabilityListenerExposesNothingElse(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Parallel()
	api := versoritest.NewServer()
	f := newFleet(t, api, redistest.Options{})
	f.start(1, nil)
	w := f.workers[0]

	for path, want := range map[string]int{
		"/metrics": 200, "/healthz": 200, "/readyz": 200,
		"/":                        404,
		"/debug/pprof/":            404,
		"/debug/pprof/heap":        404,
		"/debug/pprof/cmdline":     404,
		"/debug/pprof/profile":     404,
		"/debug/vars":              404,
		"/env":                     404,
		"/config":                  404,
		"/metrics/../env":          404,
		"/healthz/../debug/pprof/": 404,
		"/.env":                    404,
	} {
		if got := httpStatus(w.Addr, path); got != want {
			t.Errorf("GET %s = %d, want %d", path, got, want)
		}
	}

	// The limits: headers of 8 KiB (net/http adds 4 KiB of slack to
	// MaxHeaderBytes before it answers 431) and bodies of 1 KiB.
	for _, size := range []int{16 << 10, 1 << 20} {
		req := fmt.Sprintf("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", size))
		if got := rawRequest(t, w.Addr, req); got != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("GET /healthz with a %d-byte header = %d, want 431", size, got)
		}
	}
	// None of the endpoints takes a body, so a POST is refused whatever it
	// carries.
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		for _, size := range []int{2 << 10, 1 << 20} {
			req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, size, strings.Repeat("a", size))
			if got := rawRequest(t, w.Addr, req); got < 400 {
				t.Errorf("POST %s with a %d-byte body = %d, want it refused (4xx)", path, size, got)
			}
		}
	}
	if w.Exited() {
		t.Fatalf("the worker exited:\n%s", w.Logs())
	}

	// pprof only when asked for.
	bin := e2etest.Bin(t, "worker")
	p := e2etest.StartWorker(t, e2etest.WorkerOptions{Bin: bin, Name: "worker-pprof", Env: map[string]string{
		"REDIS_URL": f.redis.URL(), "VERSORI_BASE_URL": api.URL, "VERSORI_API_KEY": api.APIKey(),
		"LOG_LEVEL": "warn", "ENABLE_PPROF": "true",
	}})
	if got := httpStatus(p.Addr, "/debug/pprof/"); got != 200 {
		t.Errorf("with ENABLE_PPROF=true, GET /debug/pprof/ = %d, want 200", got)
	}
	if got := httpStatus(p.Addr, "/env"); got != 404 {
		t.Errorf("with ENABLE_PPROF=true, GET /env = %d, want 404", got)
	}
}

// TestReliabilityListenerRefusesRequestBodies: a GET carrying a body larger
// than the listener's 1 KiB limit is refused, not served. (The handlers never
// read a body, so a body-size limit that only bounds reads lets such a
// request through with 200.)
func TestReliabilityListenerRefusesRequestBodies(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Parallel()
	api := versoritest.NewServer()
	f := newFleet(t, api, redistest.Options{})
	f.start(1, nil)
	w := f.workers[0]
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		for _, size := range []int{2 << 10, 1 << 20} {
			req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, size, strings.Repeat("a", size))
			if got := rawRequest(t, w.Addr, req); got < 400 {
				t.Errorf("GET %s with a %d-byte body = %d, want it refused (413)", path, size, got)
			}
			chunked := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", path, size, strings.Repeat("a", size))
			if got := rawRequest(t, w.Addr, chunked); got < 400 {
				t.Errorf("GET %s with a %d-byte chunked body = %d, want it refused (413)", path, size, got)
			}
		}
	}
}
