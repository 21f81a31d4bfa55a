package main

// The HTTP API is the standard library's net/http ServeMux (Go 1.22
// patterns) and a hand-written OpenAPI 3.1 document (openapi.json,
// embedded and served) that the tests validate every answer against with
// kin-openapi. A framework such as huma would generate the document from Go
// types, but the routes here are few, and two of them stream bodies
// (NDJSON/CSV organisations in, report rows out) that such frameworks model
// poorly; a committed document is also what other teams review and
// generate clients from.

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/versori/import-worker/console"
	"github.com/versori/import-worker/internal/apitoken"
	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/rollout"
)

//go:embed openapi.json
var openAPIDoc []byte

// Bounds of requests.
const (
	// MaxJSONBody bounds a JSON request body.
	MaxJSONBody = 10 << 20
	// MaxStreamBody bounds an NDJSON or CSV body of organisations: a
	// million IDs take about 30 MB.
	MaxStreamBody = 256 << 20
	// MaxSmallBody bounds the bodies of retry and the other small requests.
	MaxSmallBody = 64 << 10
	// MaxListLimit bounds GET /v1/rollouts?limit=.
	MaxListLimit = 1000
	// redisCheckTimeout bounds the Redis ping before a request is served.
	redisCheckTimeout = 2 * time.Second
)

// serverConfig wires the API.
type serverConfig struct {
	Manager  *rollout.Manager
	Tokens   *apitoken.Set
	Allowed  rollout.AllowedHosts
	Logger   *slog.Logger
	Registry *prometheus.Registry
	Build    metrics.BuildInfo
	// RatePerToken and BurstPerToken bound each token's requests.
	RatePerToken  float64
	BurstPerToken int
	// ConsoleKey signs the console's session cookies (nil: random).
	ConsoleKey []byte
}

type server struct {
	cfg     serverConfig
	m       *rollout.Manager
	log     *slog.Logger
	metrics *metrics.API

	mu       sync.Mutex
	limiters map[string]*rate.Limiter // by token name: bounded by the token file
}

func newServer(cfg serverConfig) http.Handler {
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.RatePerToken <= 0 {
		cfg.RatePerToken = 50
	}
	if cfg.BurstPerToken <= 0 {
		cfg.BurstPerToken = 100
	}
	s := &server{cfg: cfg, m: cfg.Manager, log: cfg.Logger, limiters: map[string]*rate.Limiter{}}
	s.metrics = metrics.NewAPI(cfg.Registry)
	metrics.RegisterProcess(cfg.Registry, cfg.Build)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{MaxRequestsInFlight: 4, Timeout: 10 * time.Second}))

	read, write := apitoken.Reader, apitoken.Operator
	mux.Handle("GET /v1/openapi.json", s.auth(read, s.openapi))
	mux.Handle("POST /v1/rollouts", s.auth(write, s.create))
	mux.Handle("GET /v1/rollouts", s.auth(read, s.list))
	mux.Handle("GET /v1/rollouts/{id}", s.auth(read, s.status))
	mux.Handle("DELETE /v1/rollouts/{id}", s.auth(write, s.delete))
	mux.Handle("GET /v1/rollouts/{id}/organisations", s.auth(read, s.report))
	mux.Handle("POST /v1/rollouts/{id}/retry", s.auth(write, s.retry))
	mux.Handle("POST /v1/rollouts/{id}/cancel", s.auth(write, s.cancel))
	mux.Handle("POST /v1/rollouts/{id}/promote", s.auth(write, s.promote))
	mux.Handle("POST /v1/queue/pause", s.auth(write, s.pause(true)))
	mux.Handle("POST /v1/queue/resume", s.auth(write, s.pause(false)))
	// The rollout console (package console): HTML pages with their own
	// session sign-in.
	mux.Handle("/ui/", console.Must(console.New(console.Config{Manager: cfg.Manager, Tokens: cfg.Tokens, Key: cfg.ConsoleKey, Logger: cfg.Logger})))
	mux.HandleFunc("/", notFound(mux))
	return s.observe(mux)
}

// statusWriter records the status code and size of an answer.
type statusWriter struct {
	http.ResponseWriter
	code  int
	bytes int64
	// token is the name of the token that authenticated the request, for
	// the access log; never the token.
	token string
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe counts every request by route pattern and code, times it, and
// writes one access log line (never the Authorization header).
func (s *server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			p := recover()
			if sw.code == 0 {
				sw.code = http.StatusOK
				if p != nil {
					sw.code = http.StatusInternalServerError
				}
			}
			route := r.Pattern
			if route == "" || route == "/" {
				route = "unmatched"
			}
			took := time.Since(start)
			s.metrics.Requests.WithLabelValues(route, r.Method, strconv.Itoa(sw.code)).Inc()
			s.metrics.Duration.WithLabelValues(route, r.Method).Observe(took.Seconds())
			if route != "GET /metrics" && route != "GET /healthz" && route != "GET /readyz" {
				level := slog.LevelInfo
				if sw.code >= 500 {
					level = slog.LevelWarn
				}
				s.log.Log(r.Context(), level, "request", "method", r.Method, "route", route, "path", r.URL.Path,
					"status", sw.code, "bytes", sw.bytes, "duration_ms", took.Milliseconds(),
					"token", sw.token, "remote", r.RemoteAddr, "aborted", p != nil)
			}
			if p != nil {
				panic(p)
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, tok apitoken.Entry)

// auth checks the bearer token (401 without a known one), the role (403
// for a reader on a mutation) and the token's rate (429).
func (s *server) auth(need apitoken.Role, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || strings.TrimSpace(raw) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="versori-import"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer TOKEN")
			return
		}
		tok, ok := s.cfg.Tokens.Lookup(strings.TrimSpace(raw))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="versori-import", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "unknown bearer token")
			return
		}
		if sw, ok := w.(*statusWriter); ok {
			sw.token = tok.Name
		}
		if need == apitoken.Operator && tok.Role != apitoken.Operator {
			writeError(w, http.StatusForbidden, fmt.Sprintf("token %s is a reader; %s %s needs an operator token", tok.Name, r.Method, r.URL.Path))
			return
		}
		if lim := s.limiter(tok.Name); !lim.Allow() {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, fmt.Sprintf("token %s exceeds %g requests/s", tok.Name, s.cfg.RatePerToken))
			return
		}
		h(w, r, tok)
	})
}

func (s *server) limiter(name string) *rate.Limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.limiters[name]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(s.cfg.RatePerToken), s.cfg.BurstPerToken)
		s.limiters[name] = l
	}
	return l
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// fail answers err with the status it calls for: bad input 4xx, an
// unknown rollout 404, a Redis that does not answer 503.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ie *rollout.InputError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit))
	case errors.As(err, &ie):
		writeError(w, http.StatusUnprocessableEntity, ie.Error())
	case errors.Is(err, rollout.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("rollout %q not found", r.PathValue("id")))
	case errors.Is(err, rollout.ErrMismatch):
		writeError(w, http.StatusConflict, "rollout ID already taken by another connector or version; choose another rollout_id")
	case errors.Is(err, rollout.ErrQueueMismatch):
		writeError(w, http.StatusConflict, "rollout ID already used on another queue")
	default:
		if rerr := s.redisDown(r.Context()); rerr != nil {
			writeError(w, http.StatusServiceUnavailable, "redis unreachable: "+rerr.Error())
			return
		}
		s.log.Error("request failed", "route", r.Pattern, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: "+err.Error())
	}
}

// redisDown pings Redis and returns why it does not answer, or nil.
func (s *server) redisDown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisCheckTimeout)
	defer cancel()
	if err := s.m.Ping(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer within %s", redisCheckTimeout)
		}
		return err
	}
	return nil
}

// needRedis answers 503 and returns false when Redis does not answer, so a
// request that would write does not start half-way.
func (s *server) needRedis(w http.ResponseWriter, r *http.Request) bool {
	if err := s.redisDown(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "redis unreachable: "+err.Error()+"; nothing was changed")
		return false
	}
	return true
}

func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.redisDown(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "redis unreachable: "+err.Error())
		return
	}
	w.Write([]byte("ok\n"))
}

func (s *server) openapi(w http.ResponseWriter, _ *http.Request, _ apitoken.Entry) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPIDoc)
}
