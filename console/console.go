// Package console is the rollout console: HTML pages under /ui/, served by
// cmd/api, that show every rollout and each organisation's fate and let an
// operator retry, cancel and pause or resume the queue.
//
// It is built from the standard library only: html/template (every text
// from the API or the ledger is escaped), embed (templates, CSS and one
// small plain JavaScript file are in the binary; no third-party asset, no
// build step) and net/http. Every answer carries a strict
// Content-Security-Policy (default-src 'self', no inline script or style).
//
// Sign-in takes an API token, checked as the API checks its bearer tokens
// (apitoken.Set), and keeps a session in a cookie that is Secure, HttpOnly,
// SameSite=Strict, scoped to /ui/ and signed with HMAC-SHA256 under the
// session key (CONSOLE_SESSION_KEY, or a random key per process; see
// KeyFromEnv). The cookie holds the token's SHA-256, never the token, the
// expiry (Config.TTL, default 8 hours) and the session's CSRF token, which
// every form that changes something must carry; cross-origin POSTs are also
// refused (http.CrossOriginProtection). Reader tokens see no action control
// and the server answers 403 to a forged action.
//
// The console does no Redis work while nobody has it open: a page reads the
// rollout's counters and one page of its organisations (HSCAN from a cursor,
// never the whole rollout), and the rollout page polls its status at most
// once a second while it is visible and the rollout is not done.
package console

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/versori/import-worker/internal/apitoken"
	"github.com/versori/import-worker/rollout"
)

// Prefix is the path the console is mounted at.
const Prefix = "/ui/"

// CSP is the Content-Security-Policy of every console answer.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Defaults of Config.
const (
	DefaultTTL      = 8 * time.Hour
	DefaultPageSize = 50
	// ListLimit is how many rollouts the list shows, most recent first.
	ListLimit = 200
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config wires the console.
type Config struct {
	Manager *rollout.Manager
	Tokens  *apitoken.Set
	// Key signs the session cookies; nil means a random key for this
	// process.
	Key    []byte
	Logger *slog.Logger
	// TTL is how long a session lasts. Default DefaultTTL.
	TTL time.Duration
	// PageSize is the organisations per table page. Default
	// DefaultPageSize.
	PageSize int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Console serves the pages.
type Console struct {
	cfg   Config
	m     *rollout.Manager
	key   []byte
	log   *slog.Logger
	pages map[string]*template.Template
	now   func() time.Time
	h     http.Handler
}

// New returns the console's handler; mount it at Prefix.
func New(cfg Config) (*Console, error) {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Console{cfg: cfg, m: cfg.Manager, key: cfg.Key, log: cfg.Logger, now: cfg.Now}
	if len(c.key) == 0 {
		k, err := RandomKey()
		if err != nil {
			return nil, err
		}
		c.key = k
	}
	var err error
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	static, _ := fs.Sub(staticFS, "static")
	mux := http.NewServeMux()
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticHandler(http.FileServerFS(static))))
	mux.HandleFunc("GET /ui/signin", c.signinForm)
	mux.HandleFunc("POST /ui/signin", c.signin)
	mux.HandleFunc("POST /ui/signout", c.mutation(false, c.signout))
	mux.HandleFunc("GET /ui/{$}", c.page(c.list))
	mux.HandleFunc("GET /ui/rollouts/{id}", c.page(c.rollout))
	mux.HandleFunc("GET /ui/rollouts/{id}/status", c.statusJSON)
	mux.HandleFunc("GET /ui/rollouts/{id}/organisations.csv", c.page(c.csv))
	mux.HandleFunc("GET /ui/rollouts/{id}/confirm", c.page(c.confirm))
	mux.HandleFunc("POST /ui/rollouts/{id}/retry", c.mutation(true, c.retry))
	mux.HandleFunc("POST /ui/rollouts/{id}/cancel", c.mutation(true, c.cancel))
	mux.HandleFunc("POST /ui/rollouts/{id}/promote", c.mutation(true, c.promote))
	mux.HandleFunc("POST /ui/rollouts/{id}/pause", c.mutation(true, c.pause(true)))
	mux.HandleFunc("POST /ui/rollouts/{id}/resume", c.mutation(true, c.pause(false)))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		c.errorPage(w, r, c.user(r), http.StatusNotFound, "No page at "+r.URL.Path+".")
	})
	c.h = http.NewCrossOriginProtection().Handler(mux)
	return c, nil
}

// ServeHTTP sets the security headers and serves the console.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if !strings.HasPrefix(r.URL.Path, "/ui/static/") {
		h.Set("Cache-Control", "no-store")
	}
	c.h.ServeHTTP(w, r)
}

func staticHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "private, max-age=300")
		next.ServeHTTP(w, r)
	})
}

var funcs = template.FuncMap{
	"pathEscape": url.PathEscape,
	"num":        func(v int64) string { return groupDigits(v) },
	"rate": func(v float64) string {
		if v <= 0 {
			return "0"
		}
		return fmt.Sprintf("%.2f", v)
	},
	"eta":  formatETA,
	"inc":  func(v int) int { return v + 1 },
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
}

func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"signin", "list", "rollout", "confirm", "error"} {
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		pages[name] = t
	}
	return pages, nil
}

// view is what every page's template gets.
type view struct {
	Title string
	User  *user
	// CSRF is the session's token for the page's forms.
	CSRF string
	// Operator is true when the user may act: only then are action
	// controls shown.
	Operator bool
	Flash    string
	Data     any
}

func (c *Console) render(w http.ResponseWriter, code int, name string, v view) {
	if v.User != nil {
		v.CSRF, v.Operator = v.User.CSRF, v.User.Operator()
	}
	var b strings.Builder
	if err := c.pages[name].ExecuteTemplate(&b, "layout.html", v); err != nil {
		c.log.Error("console: render", "page", name, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write([]byte(b.String()))
}

func (c *Console) errorPage(w http.ResponseWriter, _ *http.Request, u *user, code int, msg string) {
	c.render(w, code, "error", view{Title: http.StatusText(code), User: u, Data: struct {
		Code    int
		Status  string
		Message string
	}{code, http.StatusText(code), msg}})
}

// fail answers err as an error page with the status it calls for.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, u *user, err error) {
	var ie *rollout.InputError
	switch {
	case errors.As(err, &ie):
		c.errorPage(w, r, u, http.StatusBadRequest, ie.Error())
	case errors.Is(err, rollout.ErrNotFound):
		c.errorPage(w, r, u, http.StatusNotFound, fmt.Sprintf("Rollout %q not found.", r.PathValue("id")))
	default:
		c.log.Error("console: request failed", "path", r.URL.Path, "err", err)
		c.errorPage(w, r, u, http.StatusInternalServerError, "Internal error: "+err.Error())
	}
}

type pageFunc func(w http.ResponseWriter, r *http.Request, u *user)

// page requires a session; without one it sends the browser to sign in.
func (c *Console) page(h pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u := c.user(r)
		if u == nil {
			http.Redirect(w, r, "/ui/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		h(w, r, u)
	}
}

// mutation requires a session (401), an operator token when operator is
// set (403) and the session's CSRF token (403).
func (c *Console) mutation(operator bool, h pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		u := c.user(r)
		if u == nil {
			c.errorPage(w, r, nil, http.StatusUnauthorized, "Not signed in, or the session expired: sign in again.")
			return
		}
		if operator && !u.Operator() {
			c.errorPage(w, r, u, http.StatusForbidden, fmt.Sprintf("Token %s is a reader: this action needs an operator token.", u.Entry.Name))
			return
		}
		if !checkCSRF(r, u) {
			c.errorPage(w, r, u, http.StatusForbidden, "The form's CSRF token is missing or stale: reload the page and try again.")
			return
		}
		h(w, r, u)
	}
}

func (c *Console) signinForm(w http.ResponseWriter, r *http.Request) {
	if c.user(r) != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	c.render(w, http.StatusOK, "signin", view{Title: "Sign in", Data: signinData{Next: safeNext(r.URL.Query().Get("next"))}})
}

type signinData struct {
	Next, Error string
}

func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	token := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	e, ok := c.cfg.Tokens.Lookup(token)
	if token == "" || !ok {
		c.render(w, http.StatusUnauthorized, "signin", view{Title: "Sign in", Data: signinData{Next: next, Error: "Unknown token. Use an API token (enqueue token prints one)."}})
		return
	}
	s, err := c.newSession(token)
	if err != nil {
		c.errorPage(w, r, nil, http.StatusInternalServerError, err.Error())
		return
	}
	c.log.Info("console: signed in", "token", e.Name, "role", string(e.Role))
	http.SetCookie(w, c.cookie(c.encode(s), int(c.cfg.TTL/time.Second)))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, u *user) {
	http.SetCookie(w, c.cookie("", -1))
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
}

// safeNext keeps a redirect target inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return Prefix
	}
	return next
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// Must returns c, or panics with err: the templates are embedded, so New
// fails only on a broken build.
func Must(c *Console, err error) *Console {
	if err != nil {
		panic(err)
	}
	return c
}
