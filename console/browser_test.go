package console

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// BrowserRequiredEnv makes a missing browser a failure rather than a skip
// (set by `make test`, which installs Debian's chromium).
const BrowserRequiredEnv = "CONSOLE_BROWSER_REQUIRED"

// ScreenshotsEnv names the directory the browser test writes its
// screenshots to; default $TMPDIR/console-screenshots.
const ScreenshotsEnv = "CONSOLE_SCREENSHOTS"

// findBrowser returns the path of a Chromium, or skips the test (fails it
// under CONSOLE_BROWSER_REQUIRED=1).
func findBrowser(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv(BrowserRequiredEnv) == "1" {
		t.Fatalf("no chromium on PATH and %s=1: install it (apt-get install -y chromium, or make deps)", BrowserRequiredEnv)
	}
	t.Skipf("browser test skipped: no chromium on PATH (apt-get install -y chromium, or make deps); set %s=1 to fail instead", BrowserRequiredEnv)
	return ""
}

// TestBrowser drives the console in a real headless Chromium: sign in, see
// a rollout's counts move, filter its failed organisations, retry them with
// the button and see them succeed, cancel another rollout, try an action
// with a reader token (refused), and see an error message holding HTML
// shown as text. It writes screenshots at 1280 and 390 px wide.
func TestBrowser(t *testing.T) {
	bin := findBrowser(t)
	e := newEnv(t, Config{PageSize: 20})
	const htmlMsg = `<img src=x onerror="document.title='pwned'"><b>bold</b>`
	e.rollout("acme-1.4.0", 40)
	for i := range 12 {
		e.finish("acme-1.4.0", i, succeeded())
	}
	for i := 12; i < 17; i++ {
		e.finish("acme-1.4.0", i, failed("server_error", 503, "upstream unavailable"))
	}
	e.finish("acme-1.4.0", 17, failed("server_error", 500, htmlMsg))
	e.finish("acme-1.4.0", 18, failed("not_found", 404, "organisation 01J… has no connector slot"))
	e.rollout("beta-2.0.0", 6)
	e.finish("beta-2.0.0", 0, succeeded())

	dir := os.Getenv(ScreenshotsEnv)
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "console-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Secure cookies are kept over plain HTTP only on localhost.
	base := strings.Replace(e.srv.URL, "127.0.0.1", "localhost", 1)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900), chromedp.Flag("lang", "en-GB"))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelT()

	do := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	// until evaluates js every 50 ms until it is true, through page loads.
	until := func(js string) bool {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js)); err == nil && ok {
				return true
			}
		}
		return false
	}
	waitText := func(sel, want string) {
		t.Helper()
		if !until(fmt.Sprintf(`(document.querySelector(%q)||{}).textContent === %q`, sel, want)) {
			t.Fatalf("%s never showed %q (shows %q)", sel, want, text(sel))
		}
	}
	shot := func(name string, width, height int64) {
		t.Helper()
		do("viewport "+name, chromedp.EmulateViewport(width, height))
		b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		p := filepath.Join(dir, name+".png")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", p)
		do("viewport back", chromedp.EmulateViewport(1280, 900))
	}

	// Sign in with the operator token.
	do("open", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("token")))
	shot("signin-390", 390, 844)
	do("sign in", chromedp.SendKeys(chromedp.ID("token"), operatorToken), chromedp.Click(chromedp.ID("signin")), chromedp.WaitVisible(chromedp.ID("rollouts")))
	shot("rollouts-1280", 1280, 900)
	shot("rollouts-390", 390, 844)

	// One rollout's page: counts, then counts that move while it is open.
	do("rollout page", chromedp.Click(chromedp.CSS(`a[href="/ui/rollouts/acme-1.4.0"]`)), chromedp.WaitVisible(chromedp.ID("live")))
	if got := text("#count-succeeded"); got != "12" {
		t.Fatalf("succeeded shows %q", got)
	}
	if got := text("#count-failed"); got != "7" {
		t.Fatalf("failed shows %q", got)
	}
	if got := text("#breaker"); got != "closed" {
		t.Errorf("breaker shows %q", got)
	}
	for i := 19; i < 22; i++ {
		e.finish("acme-1.4.0", i, succeeded())
	}
	waitText("#count-succeeded", "15")
	waitText("#count-pending", "18")

	// Filter the failed organisations; the HTML in a message is text.
	do("filter", chromedp.SetValue(chromedp.ID("f-state"), "failed"), chromedp.Click(chromedp.ID("apply-filter")))
	if !until(`location.search.includes("state=failed") && document.readyState === "complete"`) {
		t.Fatal("the filtered page did not load")
	}
	do("filtered table", chromedp.WaitVisible(chromedp.ID("orgs")))
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#orgs tbody tr.failed").length`))
	if err != nil || rows != 7 {
		t.Fatalf("failed rows %d, %v", rows, err)
	}
	all, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#orgs tbody tr").length`))
	if all != 7 {
		t.Fatalf("the failed filter shows %d rows", all)
	}
	msgs, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#orgs td.msg")).map(e => e.textContent)`))
	if !containsString(msgs, htmlMsg) {
		t.Fatalf("the HTML message is not shown as text: %q", msgs)
	}
	injected, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#orgs td.msg img, #orgs td.msg b").length`))
	title, _ := chromedp.Run(ctx, chromedp.Title())
	if injected != 0 || title == "pwned" {
		t.Fatalf("the message became markup: %d elements, title %q", injected, title)
	}
	shot("rollout-failed-1280", 1280, 900)
	shot("rollout-failed-390", 390, 844)

	// Retry them with the button, confirm, and see them succeed.
	do("retry", chromedp.Click(chromedp.ID("retry-all")), chromedp.WaitVisible(chromedp.ID("confirm")))
	if q := text("#confirm-q"); q != "Retry 7 organisations of rollout acme-1.4.0?" {
		t.Fatalf("confirmation asks %q", q)
	}
	do("confirm retry", chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if f := text(".flash"); !strings.Contains(f, "Retried 7 organisations") {
		t.Fatalf("flash %q", f)
	}
	waitText("#count-failed", "0")
	for i := 12; i < 19; i++ { // the workers take the fresh tasks
		e.finish("acme-1.4.0", i, succeeded())
	}
	waitText("#count-succeeded", "22")

	// Cancel the other rollout.
	do("other rollout", chromedp.Navigate(base+"/ui/rollouts/beta-2.0.0"), chromedp.WaitVisible(chromedp.ID("cancel")))
	do("cancel", chromedp.Click(chromedp.ID("cancel")), chromedp.WaitVisible(chromedp.ID("confirm")))
	if q := text("#confirm-q"); q != "Cancel rollout beta-2.0.0?" {
		t.Fatalf("confirmation asks %q", q)
	}
	do("confirm cancel", chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := text("#count-cancelled"); got != "5" {
		t.Fatalf("cancelled shows %q", got)
	}
	if c := e.counts("beta-2.0.0"); c.Cancelled != 5 || c.Pending != 0 {
		t.Fatalf("beta after cancel: %+v", c)
	}
	if got := text(`[data-field="state"]`); got != "cancelled" {
		t.Errorf("state shows %q", got)
	}

	// A reader: no action controls, and a forged action is refused.
	do("sign out", chromedp.Click(chromedp.CSS(`form[action="/ui/signout"] button`)), chromedp.WaitVisible(chromedp.ID("token")))
	do("reader sign in", chromedp.SendKeys(chromedp.ID("token"), readerToken), chromedp.Click(chromedp.ID("signin")), chromedp.WaitVisible(chromedp.ID("rollouts")))
	do("reader rollout", chromedp.Navigate(base+"/ui/rollouts/acme-1.4.0"), chromedp.WaitVisible(chromedp.ID("live")))
	controls, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#actions, a[href*='confirm']").length`))
	if controls != 0 {
		t.Fatalf("the reader sees %d action controls", controls)
	}
	e.finish("acme-1.4.0", 30, failed("server_error", 500, "boom"))
	code, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch("/ui/rollouts/acme-1.4.0/retry", {method: "POST",
		body: new URLSearchParams({csrf: document.querySelector("input[name=csrf]").value})}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || code != 403 {
		t.Fatalf("a reader's forged retry: %d, %v", code, err)
	}
	if c := e.counts("acme-1.4.0"); c.Failed != 1 {
		t.Fatalf("the reader's retry changed the rollout: %+v", c)
	}
	do("reader confirm page", chromedp.Navigate(base+"/ui/rollouts/acme-1.4.0/confirm?action=cancel"), chromedp.WaitVisible(chromedp.ID("error-message")))
	if m := text("#error-message"); !strings.Contains(m, "reader") {
		t.Fatalf("reader's confirm page says %q", m)
	}
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
