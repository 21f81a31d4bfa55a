// Package versoritest runs a fake of the Versori Connect API for tests, the
// demo and benchmarks, in the manner of net/http/httptest.
//
// The fake serves the import endpoint and the lookups with responses shaped
// like the real API, checks the Authorization header, and remembers which
// versions each organisation holds, so a second import of the same version
// into the same organisation answers 409. On top of that it can misbehave
// in every way the client must survive (see FaultKind), per organisation or
// by probability; add latency with a chosen distribution; enforce or merely
// observe a rate limit; and it counts what it saw, so a test can assert on
// calls, imports actually performed and rate violations.
//
//	s := versoritest.NewServer(versoritest.WithLatency(versoritest.Latency{Mean: 5 * time.Millisecond}))
//	defer s.Close()
//	c, _ := versori.New(s.ClientConfig())
//	s.FailNext(orgID, 2, versoritest.Fault{Kind: versoritest.FaultServerError, Status: 503})
//
// Faults, latency and the rate limit apply to import calls; the outage and
// revoked-key switches apply to every API request.
package versoritest

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/versori/import-worker/versori"
)

// DefaultPrefix is the path the API is served under, as in production.
const DefaultPrefix = "/api/connect/v1"

// Server is a fake Connect API. Create it with NewServer (started) or
// NewUnstartedServer (a plain http.Handler to mount elsewhere). All methods
// are safe for concurrent use.
type Server struct {
	// URL is the base URL to put in versori.Config.BaseURL, e.g.
	// "http://127.0.0.1:41234/api/connect/v1". Empty until started.
	URL string
	// Listener is the listener once started.
	Listener net.Listener

	prefix  string
	mux     *http.ServeMux
	srv     *http.Server
	epoch   time.Time
	closing chan struct{}
	closed  sync.Once

	cfg     atomic.Pointer[settings]
	cfgMu   sync.Mutex // serialises writers of cfg
	outage  atomic.Bool
	revoked atomic.Bool

	seeded bool
	rndMu  sync.Mutex
	rnd    *mrand.Rand

	limiter limiter

	shards [numShards]shard

	globalMu     sync.Mutex
	globalFault  *Fault
	globalScript []scripted

	catMu     sync.RWMutex
	catalogue map[string]*PublicConnector
	catOrder  []string

	timesMu  sync.Mutex
	times    []int64 // import call arrivals, ns since epoch
	refused  []int64 // arrivals of calls the rate limit answered 429
	maxTimes int

	reqSeq     atomic.Uint64 // request IDs; cheaper than ULIDs and unique enough
	requests   atomic.Int64
	calls      atomic.Int64
	imports    atomic.Int64
	conflicts  atomic.Int64
	violations atomic.Int64
	refusals   atomic.Int64
	faults     [len(allKinds)]atomic.Int64
	statuses   [600]atomic.Int64
}

// settings is the configuration read on every request, swapped whole.
type settings struct {
	key     string
	latency Latency
	rates   *rateTable
}

const numShards = 64

type shard struct {
	mu   sync.Mutex
	orgs map[string]*orgState
}

type orgState struct {
	calls, imports, conflicts int
	held                      map[string]heldVersion // connector ID + "\x00" + version name
	fault                     *Fault
	script                    []scripted
}

type heldVersion struct {
	connectorID string
	version     versori.ConnectorVersion
}

type scripted struct {
	n     int
	fault Fault
}

// PublicConnector is an entry of the fake's public catalogue.
type PublicConnector struct {
	ID   string
	Name string
	// Versions lists version names, oldest first; the last is "latest".
	Versions []string
	// Default is the version "default" resolves to; latest when empty.
	Default string
}

// Option configures a Server.
type Option func(*Server)

// WithAPIKey sets the key the fake accepts (a random one by default).
func WithAPIKey(key string) Option {
	return func(s *Server) { s.update(func(c *settings) { c.key = key }) }
}

// WithPrefix serves the API under prefix instead of DefaultPrefix.
func WithPrefix(prefix string) Option {
	return func(s *Server) { s.prefix = "/" + strings.Trim(prefix, "/") }
}

// WithLatency sets the latency added to import calls.
func WithLatency(l Latency) Option { return func(s *Server) { s.SetLatency(l) } }

// WithRateLimit enforces a rate limit on import calls; see SetRateLimit.
func WithRateLimit(perSecond float64, burst int) Option {
	return func(s *Server) { s.SetRateLimit(perSecond, burst) }
}

// WithRateLimitPolicy sets the full rate-limit policy; see RateLimit.
func WithRateLimitPolicy(p RateLimit) Option {
	return func(s *Server) { s.SetRateLimitPolicy(p) }
}

// WithFaultRates sets fault probabilities; it panics on invalid rates, as
// a test set-up mistake should stop the test.
func WithFaultRates(rates map[FaultKind]float64) Option {
	return func(s *Server) {
		if err := s.SetFaultRates(rates); err != nil {
			panic(err)
		}
	}
}

// WithSeed makes the fake's random choices (fault picks, latency samples)
// reproducible. Seeded draws share one lock, so leave it off for
// benchmarks.
func WithSeed(seed uint64) Option {
	return func(s *Server) {
		s.seeded = true
		s.rnd = mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	}
}

// WithConnector adds a connector to the public catalogue. With an empty
// catalogue (the default) any connector ID and version name is importable
// and "latest"/"default" are kept as given; once the catalogue has entries,
// unknown connectors and versions answer 404.
func WithConnector(c PublicConnector) Option { return func(s *Server) { s.AddConnector(c) } }

// NewUnstartedServer returns a fake that is not listening: use it as an
// http.Handler, or call Start.
func NewUnstartedServer(opts ...Option) *Server {
	s := &Server{
		prefix:    DefaultPrefix,
		epoch:     time.Now(),
		closing:   make(chan struct{}),
		catalogue: map[string]*PublicConnector{},
		maxTimes:  maxCallTimes,
	}
	s.cfg.Store(&settings{key: randomKey()})
	for i := range s.shards {
		s.shards[i].orgs = map[string]*orgState{}
	}
	for _, o := range opts {
		o(s)
	}
	s.mux = s.routes()
	return s
}

// NewServer starts a fake on a random port of 127.0.0.1. Close it when done.
func NewServer(opts ...Option) *Server {
	s := NewUnstartedServer(opts...)
	if err := s.Start("127.0.0.1:0"); err != nil {
		panic(fmt.Sprintf("versoritest: %v", err))
	}
	return s
}

// Start listens on addr and serves in the background.
func (s *Server) Start(addr string) error {
	if s.srv != nil {
		return errors.New("versoritest: server already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return s.Serve(ln)
}

// Serve serves on ln in the background and sets URL and Listener.
func (s *Server) Serve(ln net.Listener) error {
	s.Listener = ln
	s.URL = "http://" + ln.Addr().String() + s.prefix
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return nil
}

// Close stops the server, drops every connection and releases hanging
// requests.
func (s *Server) Close() {
	s.closed.Do(func() { close(s.closing) })
	if s.srv != nil {
		_ = s.srv.Close()
	}
}

// APIKey returns the key the fake accepts.
func (s *Server) APIKey() string { return s.cfg.Load().key }

// RotateKey makes the fake accept only key from now on; calls with the old
// key answer 401.
func (s *Server) RotateKey(key string) { s.update(func(c *settings) { c.key = key }) }

// ClientConfig returns a versori.Config pointing at the fake with its key.
func (s *Server) ClientConfig() versori.Config {
	return versori.Config{BaseURL: s.URL, APIKey: s.APIKey()}
}

// SetLatency sets the latency added to import calls.
func (s *Server) SetLatency(l Latency) { s.update(func(c *settings) { c.latency = l }) }

// SetFaultRates replaces the fault probabilities applied to import calls
// that have no scripted fault. Rates must be within 0..1 and add up to at
// most 1; nil or empty clears them.
func (s *Server) SetFaultRates(rates map[FaultKind]float64) error {
	t, err := newRateTable(rates)
	if err != nil {
		return err
	}
	s.update(func(c *settings) { c.rates = t })
	return nil
}

// SetOutage makes every API request answer 503 while on.
func (s *Server) SetOutage(on bool) { s.outage.Store(on) }

// SetUnauthorized makes every API request answer 401 while on, as if the
// key had been revoked.
func (s *Server) SetUnauthorized(on bool) { s.revoked.Store(on) }

// SetFault makes every import call for orgID misbehave as f until cleared
// with a zero Fault. orgID "" means every organisation. A fault scripted
// with FailNext takes precedence.
func (s *Server) SetFault(orgID string, f Fault) {
	var p *Fault
	if f.Kind != "" {
		p = &f
	}
	if orgID == "" {
		s.globalMu.Lock()
		s.globalFault = p
		s.globalMu.Unlock()
		return
	}
	sh := s.shard(orgID)
	sh.mu.Lock()
	sh.get(orgID).fault = p
	sh.mu.Unlock()
}

// FailNext makes the next n import calls for orgID misbehave as f. orgID ""
// means the next n import calls of any organisation. Calls refused earlier
// (rate limit, outage, bad key) do not use them up.
func (s *Server) FailNext(orgID string, n int, f Fault) {
	if n <= 0 {
		return
	}
	if orgID == "" {
		s.globalMu.Lock()
		s.globalScript = append(s.globalScript, scripted{n: n, fault: f})
		s.globalMu.Unlock()
		return
	}
	sh := s.shard(orgID)
	sh.mu.Lock()
	st := sh.get(orgID)
	st.script = append(st.script, scripted{n: n, fault: f})
	sh.mu.Unlock()
}

// ClearFaults removes every scripted and persistent fault (fault rates,
// outage and revoked-key switches are left alone).
func (s *Server) ClearFaults() {
	s.globalMu.Lock()
	s.globalFault, s.globalScript = nil, nil
	s.globalMu.Unlock()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, st := range sh.orgs {
			st.fault, st.script = nil, nil
		}
		sh.mu.Unlock()
	}
}

// AddConnector adds or replaces a connector in the public catalogue.
func (s *Server) AddConnector(c PublicConnector) {
	s.catMu.Lock()
	defer s.catMu.Unlock()
	if _, ok := s.catalogue[c.ID]; !ok {
		s.catOrder = append(s.catOrder, c.ID)
	}
	c.Versions = append([]string(nil), c.Versions...)
	s.catalogue[c.ID] = &c
}

// Reset forgets every held version, counter, call time and fault, and turns
// the outage and revoked-key switches off. Configuration (key, prefix,
// latency, fault rates, rate-limit policy, catalogue) is kept; the rate
// limiter starts afresh.
func (s *Server) Reset() {
	s.ClearFaults()
	s.outage.Store(false)
	s.revoked.Store(false)
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		sh.orgs = map[string]*orgState{}
		sh.mu.Unlock()
	}
	s.timesMu.Lock()
	s.times, s.refused = nil, nil
	s.timesMu.Unlock()
	s.limiter.reset()
	for _, c := range []*atomic.Int64{&s.requests, &s.calls, &s.imports, &s.conflicts, &s.violations, &s.refusals} {
		c.Store(0)
	}
	for i := range s.faults {
		s.faults[i].Store(0)
	}
	for i := range s.statuses {
		s.statuses[i].Store(0)
	}
}

func (s *Server) update(f func(*settings)) {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	c := *s.cfg.Load()
	f(&c)
	s.cfg.Store(&c)
}

func (s *Server) shard(orgID string) *shard {
	// FNV-1a: cheap, and org IDs are random anyway.
	h := uint32(2166136261)
	for i := 0; i < len(orgID); i++ {
		h = (h ^ uint32(orgID[i])) * 16777619
	}
	return &s.shards[h%numShards]
}

func (sh *shard) get(orgID string) *orgState {
	st := sh.orgs[orgID]
	if st == nil {
		st = &orgState{}
		sh.orgs[orgID] = st
	}
	return st
}

// nextFault takes the next scripted fault, else the persistent one.
func (st *orgState) nextFault() *Fault {
	if len(st.script) > 0 {
		f := st.script[0].fault
		if st.script[0].n--; st.script[0].n == 0 {
			st.script = st.script[1:]
		}
		return &f
	}
	return st.fault
}

func (s *Server) globalNextFault() *Fault {
	s.globalMu.Lock()
	defer s.globalMu.Unlock()
	if len(s.globalScript) > 0 {
		f := s.globalScript[0].fault
		if s.globalScript[0].n--; s.globalScript[0].n == 0 {
			s.globalScript = s.globalScript[1:]
		}
		return &f
	}
	return s.globalFault
}

// randSource is the fake's randomness: a seeded generator behind a lock,
// or the runtime's per-thread one.
type randSource struct{ s *Server }

func (r randSource) float64() float64 {
	if !r.s.seeded {
		return mrand.Float64()
	}
	r.s.rndMu.Lock()
	defer r.s.rndMu.Unlock()
	return r.s.rnd.Float64()
}

func (r randSource) expFloat64() float64 {
	if !r.s.seeded {
		return mrand.ExpFloat64()
	}
	r.s.rndMu.Lock()
	defer r.s.rndMu.Unlock()
	return r.s.rnd.ExpFloat64()
}

func (r randSource) normFloat64() float64 {
	if !r.s.seeded {
		return mrand.NormFloat64()
	}
	r.s.rndMu.Lock()
	defer r.s.rndMu.Unlock()
	return r.s.rnd.NormFloat64()
}

func randomKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "vk_test_" + hex.EncodeToString(b[:])
}

// authOK checks "Bearer <key>" or "JWT <key>" in constant time.
func (s *Server) authOK(r *http.Request, key string) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !(strings.EqualFold(scheme, "Bearer") || strings.EqualFold(scheme, "JWT")) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(tok), []byte(key)) == 1
}

// hold waits d, or forever when d <= 0, until the request or the server
// ends; false if cut short.
func (s *Server) hold(ctx context.Context, d time.Duration) bool {
	if d > 0 {
		return s.sleep(ctx, d)
	}
	select {
	case <-ctx.Done():
	case <-s.closing:
	}
	return false
}

// sleep waits d, or until the request or the server ends; false if cut short.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.closing:
		return false
	}
}

// maxCallTimes bounds the arrival times kept (32 MiB), so a fake left
// running for days does not grow without limit; past it, the older half is
// dropped.
const maxCallTimes = 1 << 22

func (s *Server) recordArrival(now time.Time) {
	s.timesMu.Lock()
	s.times = appendBounded(s.times, int64(now.Sub(s.epoch)), s.maxTimes)
	s.timesMu.Unlock()
}

// recordRefusal logs the arrival of a call the rate limit refused.
func (s *Server) recordRefusal(now time.Time) {
	s.timesMu.Lock()
	s.refused = appendBounded(s.refused, int64(now.Sub(s.epoch)), s.maxTimes)
	s.timesMu.Unlock()
}

// appendBounded appends ns, first dropping the older half of times when it
// holds max.
func appendBounded(times []int64, ns int64, max int) []int64 {
	if len(times) >= max {
		times = times[:copy(times, times[len(times)/2:])]
	}
	return append(times, ns)
}
