package console

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/versori"
)

// TestFigures100k measures the console on a rollout of 100,000
// organisations (1,000 of them failed): the issue asks for its page
// (counters, fleet state and the first table page) within 200 ms and the
// first page of its table within 100 ms. It logs FIGURE lines and fails
// past 400 ms (-race and a busy CI machine slow the server several-fold); the
// sparse failed filter is the worst case of a table page, as HSCAN reads
// about 5,000 records to find 50. CONSOLE_FIGURES_STRICT=0 only logs.
func TestFigures100k(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the 100,000-organisation figure is skipped")
	}
	const n = 100_000
	e := newEnv(t, Config{})
	ctx := context.Background()
	if _, err := e.led.CreateRollout(ctx, ledger.Rollout{ID: "big", ConnectorID: connector, Version: "1.4.0", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	orgs := make([]string, n)
	for i := range orgs {
		orgs[i] = org(i)
	}
	if _, err := e.led.AddOrgs(ctx, "big", oids(orgs...)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 100 {
		e.finish("big", i, failed("server_error", 503, "upstream unavailable"))
	}
	ck, _ := e.signin(readerToken)
	best := func(path string) time.Duration {
		b := time.Hour
		for range 5 {
			start := time.Now()
			a := e.do("GET", path, ck, nil)
			if d := time.Since(start); d < b {
				b = d
			}
			if a.code != http.StatusOK {
				t.Fatalf("%s: %d", path, a.code)
			}
			if strings.Count(a.body, "data-org=") == 0 && !strings.Contains(path, "status") {
				t.Fatalf("%s: no rows", path)
			}
		}
		return b
	}
	page := best("/ui/rollouts/big")
	failedPage := best("/ui/rollouts/big?" + url.Values{"state": {"failed"}}.Encode())
	status := best("/ui/rollouts/big/status")
	t.Logf("FIGURE console rollout page, 100,000 organisations: %v (want < 200ms)", page.Round(time.Microsecond))
	t.Logf("FIGURE console failed-filter table page, 100,000 organisations, 1%% failed: %v (want < 100ms)", failedPage.Round(time.Microsecond))
	t.Logf("FIGURE console live status poll: %v", status.Round(time.Microsecond))
	if os.Getenv("CONSOLE_FIGURES_STRICT") == "0" {
		return
	}
	if page > 400*time.Millisecond || failedPage > 400*time.Millisecond {
		t.Errorf("too slow: page %v, failed page %v", page, failedPage)
	}
}

// oids converts IDs known canonical to the ledger's type.
func oids(ss ...string) []versori.OrgID {
	out := make([]versori.OrgID, len(ss))
	for i, s := range ss {
		out[i] = versori.OrgID(s)
	}
	return out
}
