package versori

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPoolSizedToConcurrency: with MaxConnsPerHost at the worker's
// concurrency, a second wave of concurrent calls reuses the first wave's
// connections instead of dialling again (Go's default keeps only 2).
func TestPoolSizedToConcurrency(t *testing.T) {
	const concurrency = 20
	var dials atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond) // keep the wave's calls overlapping
		_, _ = io.WriteString(w, `{"id":"x"}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	wave := func(c *Client) int32 {
		before := dials.Load()
		var wg sync.WaitGroup
		for range concurrency {
			wg.Go(func() {
				if _, err := c.ImportPublicConnectorVersion(context.Background(), "01J8Z3K4M5N6P7Q8R9S0T1V2W3", "01J8Z3K4M5N6P7Q8R9S0T1V2W3", "1"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		return dials.Load() - before
	}
	c, err := New(Config{BaseURL: srv.URL, APIKey: "k", MaxConnsPerHost: concurrency})
	if err != nil {
		t.Fatal(err)
	}
	if tr := c.hc.Transport.(*http.Transport); tr.MaxIdleConnsPerHost != concurrency || tr.MaxIdleConns < concurrency || tr.MaxConnsPerHost != 0 {
		t.Fatalf("transport: idle per host %d, idle %d, max per host %d", tr.MaxIdleConnsPerHost, tr.MaxIdleConns, tr.MaxConnsPerHost)
	}
	wave(c)
	if n := wave(c); n > 2 {
		t.Errorf("second wave dialled %d new connections, want the pool reused", n)
	}

	c, _ = New(Config{BaseURL: srv.URL, APIKey: "k"})
	if tr := c.hc.Transport.(*http.Transport); tr.MaxIdleConnsPerHost != DefaultMaxConnsPerHost {
		t.Errorf("default idle pool %d", tr.MaxIdleConnsPerHost)
	}
	c, _ = New(Config{BaseURL: srv.URL, APIKey: "k", MaxConnsPerHost: 500})
	if tr := c.hc.Transport.(*http.Transport); tr.MaxIdleConns != 500 {
		t.Errorf("MaxIdleConns %d, want raised to 500", tr.MaxIdleConns)
	}
}
