package versoritest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/oklog/ulid/v2"

	"github.com/versori/import-worker/versori"
)

func (s *Server) routes() *http.ServeMux {
	m := http.NewServeMux()
	p := s.prefix
	m.HandleFunc("POST "+p+"/o/{org}/connectors/{connector}/versions/{version}/library/import", s.handleImport)
	m.HandleFunc("GET "+p+"/o/{org}/connectors/{connector}/versions/{version}", s.handleGetVersion)
	m.HandleFunc("GET "+p+"/o/{org}/connectors/{connector}/versions", s.handleListVersions)
	m.HandleFunc("GET "+p+"/connectors", s.handleListConnectors)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, http.StatusNotFound, "not_found", "no such endpoint", nil, "")
	})
	return m
}

// ServeHTTP serves the API. Every request passes the outage and revoked-key
// switches and the auth check before reaching its handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	m := s.mux
	if m == nil {
		m = s.routes()
	}
	m.ServeHTTP(w, r)
}

// gate applies the switches and the auth check; false if it answered.
func (s *Server) gate(w http.ResponseWriter, r *http.Request, cfg *settings) bool {
	switch {
	case s.outage.Load():
		w.Header().Set("Retry-After", "1")
		s.writeError(w, http.StatusServiceUnavailable, "unavailable", "service unavailable", nil, "")
		return false
	case s.revoked.Load() || !s.authOK(r, cfg.key):
		w.Header().Set("WWW-Authenticate", `Bearer realm="versori"`)
		s.writeError(w, http.StatusUnauthorized, "unauthorized", "invalid or missing credentials", nil, "")
		return false
	}
	return true
}

func (s *Server) handleImport(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	s.calls.Add(1)
	s.recordArrival(now)
	org, connector, version := r.PathValue("org"), r.PathValue("connector"), r.PathValue("version")
	sh := s.shard(org)
	sh.mu.Lock()
	sh.get(org).calls++
	sh.mu.Unlock()

	v := s.limiter.arrive(int64(now.Sub(s.epoch)))
	v.headers(w.Header()) // on every answer below, whatever it is
	if v.violated {
		s.violations.Add(1)
		if v.refuse {
			s.refusals.Add(1)
			s.recordRefusal(now)
			if !v.policy.OmitRetryAfter {
				w.Header().Set("Retry-After", strconv.FormatInt(int64((v.wait+time.Second-1)/time.Second), 10))
			}
			s.writeError(w, http.StatusTooManyRequests, "rate_limited", "rate limit exceeded", nil, "")
			return
		}
	}
	cfg := s.cfg.Load()
	if !s.gate(w, r, cfg) {
		return
	}
	rnd := randSource{s}
	if !cfg.latency.zero() && !s.sleep(r.Context(), cfg.latency.sample(rnd)) {
		return
	}
	if fields := checkIDs(org, connector, version); fields != nil {
		s.writeError(w, http.StatusBadRequest, "validation_error", "invalid request", fields, "")
		return
	}
	resolved, ok := s.resolve(connector, version)
	if !ok {
		s.writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("connector %s has no version %q", connector, version), nil, "")
		return
	}

	sh.mu.Lock()
	st := sh.get(org)
	f := st.nextFault()
	sh.mu.Unlock()
	if f == nil {
		f = s.globalNextFault()
	}
	if f == nil && cfg.rates != nil {
		if k := cfg.rates.pick(rnd.float64()); k != "" {
			f = &Fault{Kind: k}
		}
	}
	if f != nil && f.Kind != FaultSlowImport {
		s.fault(w, r, f)
		return
	}

	status, body := s.importVersion(org, connector, resolved)
	if f != nil { // slow import: done, but the answer is late
		s.faults[FaultSlowImport.index()].Add(1)
		if !s.hold(r.Context(), f.Delay) {
			panic(http.ErrAbortHandler) // the client gave up: send nothing
		}
	}
	if status == http.StatusConflict {
		s.writeError(w, status, "conflict", fmt.Sprintf("organisation %s already holds version %q of connector %s", org, resolved, connector), nil, "")
		return
	}
	s.writeJSON(w, status, body)
}

// importVersion records the import, or reports the conflict.
func (s *Server) importVersion(org, connector, version string) (int, *versori.Connector) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	sh := s.shard(org)
	sh.mu.Lock()
	st := sh.get(org)
	key := connector + "\x00" + version
	if _, held := st.held[key]; held {
		st.conflicts++
		sh.mu.Unlock()
		s.conflicts.Add(1)
		return http.StatusConflict, nil
	}
	v := versori.ConnectorVersion{
		ID: ulid.Make().String(), Name: version, IsLatest: true, IsDefault: true,
		CreatedAt: now, UpdatedAt: now,
	}
	if st.held == nil {
		st.held = map[string]heldVersion{}
	}
	st.held[key] = heldVersion{connectorID: connector, version: v}
	st.imports++
	sh.mu.Unlock()
	s.imports.Add(1)
	return http.StatusOK, &versori.Connector{
		ID: ulid.Make().String(), OrganisationID: org, Name: s.connectorName(connector),
		Protocol: "http", BaseURL: "https://api.example.com",
		AuthSchemeConfigs: json.RawMessage(`[]`), Connections: json.RawMessage(`[]`),
		Versions: []versori.ConnectorVersion{v}, CreatedAt: now, UpdatedAt: now,
	}
}

func (s *Server) connectorName(id string) string {
	s.catMu.RLock()
	defer s.catMu.RUnlock()
	if c := s.catalogue[id]; c != nil && c.Name != "" {
		return c.Name
	}
	return "Connector " + id
}

// resolve maps a version name to a catalogue version ("latest" and
// "default" included); with an empty catalogue every name stands as given.
func (s *Server) resolve(connector, version string) (string, bool) {
	s.catMu.RLock()
	defer s.catMu.RUnlock()
	if len(s.catalogue) == 0 {
		return version, true
	}
	c := s.catalogue[connector]
	if c == nil || len(c.Versions) == 0 {
		return "", false
	}
	latest := c.Versions[len(c.Versions)-1]
	switch version {
	case "latest":
		return latest, true
	case "default":
		if c.Default != "" {
			return c.Default, true
		}
		return latest, true
	}
	for _, v := range c.Versions {
		if v == version {
			return v, true
		}
	}
	return "", false
}

func checkIDs(org, connector, version string) []versori.FieldError {
	var fields []versori.FieldError
	if err := versori.ValidateID("organisation ID", org); err != nil {
		fields = append(fields, versori.FieldError{Field: "organisation_id", Message: err.Error()})
	}
	if err := versori.ValidateID("connector ID", connector); err != nil {
		fields = append(fields, versori.FieldError{Field: "connector_id", Message: err.Error()})
	}
	if version == "" {
		fields = append(fields, versori.FieldError{Field: "version", Message: "must not be empty"})
	}
	return fields
}

func (s *Server) handleGetVersion(w http.ResponseWriter, r *http.Request) {
	if !s.gate(w, r, s.cfg.Load()) {
		return
	}
	org, connector, version := r.PathValue("org"), r.PathValue("connector"), r.PathValue("version")
	if fields := checkIDs(org, connector, version); fields != nil {
		s.writeError(w, http.StatusBadRequest, "validation_error", "invalid request", fields, "")
		return
	}
	sh := s.shard(org)
	sh.mu.Lock()
	var (
		v  versori.ConnectorVersion
		ok bool
	)
	if st := sh.orgs[org]; st != nil {
		var h heldVersion
		h, ok = st.held[connector+"\x00"+version]
		v = h.version
	}
	sh.mu.Unlock()
	if !ok {
		s.writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("organisation %s holds no version %q of connector %s", org, version, connector), nil, "")
		return
	}
	s.writeJSON(w, http.StatusOK, v)
}

func (s *Server) handleListVersions(w http.ResponseWriter, r *http.Request) {
	if !s.gate(w, r, s.cfg.Load()) {
		return
	}
	org, connector := r.PathValue("org"), r.PathValue("connector")
	if fields := checkIDs(org, connector, "-"); fields != nil {
		s.writeError(w, http.StatusBadRequest, "validation_error", "invalid request", fields, "")
		return
	}
	sh := s.shard(org)
	sh.mu.Lock()
	var items []versori.ConnectorVersion
	if st := sh.orgs[org]; st != nil {
		for _, h := range st.held {
			if h.connectorID == connector {
				items = append(items, h.version)
			}
		}
	}
	sh.mu.Unlock()
	if len(items) == 0 {
		s.writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("organisation %s holds no connector %s", org, connector), nil, "")
		return
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
	page, next, prev, err := paginate(r, len(items), func(i int) string { return items[i].Name })
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "validation_error", err.Error(), nil, "")
		return
	}
	s.writeJSON(w, http.StatusOK, versori.ConnectorVersionPage{Items: items[page[0]:page[1]], TotalCount: len(items), Next: next, Prev: prev})
}

func (s *Server) handleListConnectors(w http.ResponseWriter, r *http.Request) {
	if !s.gate(w, r, s.cfg.Load()) {
		return
	}
	s.catMu.RLock()
	items := make([]versori.Connector, 0, len(s.catOrder))
	epoch := s.epoch.UTC().Truncate(time.Second)
	for _, id := range s.catOrder {
		c := s.catalogue[id]
		pc := versori.Connector{ID: c.ID, Name: c.Name, Public: true, Protocol: "http", BaseURL: "https://api.example.com",
			AuthSchemeConfigs: json.RawMessage(`[]`), Connections: json.RawMessage(`[]`), CreatedAt: epoch, UpdatedAt: epoch}
		for i, name := range c.Versions {
			pub := epoch
			pc.Versions = append(pc.Versions, versori.ConnectorVersion{
				ID: name, Name: name, IsLatest: i == len(c.Versions)-1,
				IsDefault: name == c.Default || (c.Default == "" && i == len(c.Versions)-1),
				CreatedAt: epoch, UpdatedAt: epoch, PublishedAt: &pub,
			})
		}
		items = append(items, pc)
	}
	s.catMu.RUnlock()
	page, next, prev, err := paginate(r, len(items), func(i int) string { return items[i].ID })
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "validation_error", err.Error(), nil, "")
		return
	}
	s.writeJSON(w, http.StatusOK, versori.ConnectorPage{Items: items[page[0]:page[1]], TotalCount: len(items), Next: next, Prev: prev})
}

// paginate applies first/after/before, where cursors are item keys.
func paginate(r *http.Request, n int, key func(int) string) (page [2]int, next, prev string, err error) {
	q := r.URL.Query()
	first := 20
	if v := q.Get("first"); v != "" {
		first, err = strconv.Atoi(v)
		if err != nil || first < 1 || first > 100 {
			return page, "", "", fmt.Errorf("first must be 1..100")
		}
	}
	lo, hi := 0, n
	if a := q.Get("after"); a != "" {
		for i := 0; i < n; i++ {
			if key(i) == a {
				lo = i + 1
			}
		}
	}
	if b := q.Get("before"); b != "" {
		for i := 0; i < n; i++ {
			if key(i) == b {
				hi = i
			}
		}
		lo = max(lo, hi-first)
	}
	hi = min(hi, lo+first)
	lo = min(lo, hi)
	if hi < n && hi > lo {
		next = key(hi - 1)
	}
	if lo > 0 && hi > lo {
		prev = key(lo)
	}
	return [2]int{lo, hi}, next, prev, nil
}

// fault answers with f and counts it.
func (s *Server) fault(w http.ResponseWriter, r *http.Request, f *Fault) {
	if i := f.Kind.index(); i >= 0 {
		s.faults[i].Add(1)
	}
	status := func(def int) int {
		if f.Status != 0 {
			return f.Status
		}
		return def
	}
	msg := func(code, message string) (string, string) {
		if f.Code != "" {
			code = f.Code
		}
		if f.Message != "" {
			message = f.Message
		}
		return code, message
	}
	switch f.Kind {
	case FaultRateLimited:
		ra := f.RetryAfter
		if ra == "" {
			ra = "1"
		}
		w.Header().Set("Retry-After", ra)
		c, m := msg("rate_limited", "too many requests")
		s.writeError(w, status(http.StatusTooManyRequests), c, m, nil, "")
	case FaultRateLimitedNoRetryAfter:
		c, m := msg("rate_limited", "too many requests")
		s.writeError(w, status(http.StatusTooManyRequests), c, m, nil, "")
	case FaultServerError:
		c, m := msg("internal", "internal server error")
		s.writeError(w, status(http.StatusInternalServerError), c, m, nil, "")
	case FaultUnavailable:
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		c, m := msg("unavailable", "service unavailable")
		s.writeError(w, status(http.StatusServiceUnavailable), c, m, nil, "")
	case FaultUnauthorized:
		c, m := msg("unauthorized", "invalid or missing credentials")
		s.writeError(w, status(http.StatusUnauthorized), c, m, nil, "")
	case FaultForbidden:
		c, m := msg("forbidden", "the key may not import into this organisation")
		s.writeError(w, status(http.StatusForbidden), c, m, nil, "")
	case FaultNotFound:
		c, m := msg("not_found", "connector version not found")
		s.writeError(w, status(http.StatusNotFound), c, m, nil, "")
	case FaultInvalid:
		c, m := msg("validation_error", "invalid request")
		s.writeError(w, status(http.StatusBadRequest), c, m, []versori.FieldError{{Field: "version", Message: "is not importable"}}, "")
	case FaultHang:
		if !s.hold(r.Context(), f.Delay) {
			panic(http.ErrAbortHandler) // the client gave up: send nothing
		}
		s.writeError(w, http.StatusGatewayTimeout, "timeout", "upstream timed out", nil, "")
	case FaultReset:
		reset(w)
	case FaultHTML:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		s.writeRaw(w, status(http.StatusBadGateway), htmlPage)
	case FaultOversized:
		size := f.Size
		if size <= 0 {
			size = DefaultOversizedBytes
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		s.countStatus(status(http.StatusBadGateway))
		w.WriteHeader(status(http.StatusBadGateway))
		for size > 0 {
			n := min(size, int64(len(filler)))
			if _, err := w.Write(filler[:n]); err != nil {
				return
			}
			size -= n
		}
	case FaultEcho:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		s.writeRaw(w, status(http.StatusInternalServerError), []byte(dumpRequest(r)))
	case FaultEchoJSON:
		d := dumpRequest(r)
		s.writeError(w, status(http.StatusInternalServerError), "echo", d, []versori.FieldError{{Field: "authorization", Message: r.Header.Get("Authorization")}}, d)
	case FaultEchoPHP:
		w.Header().Set("Content-Type", "application/json")
		s.writeRaw(w, status(http.StatusBadGateway), phpEcho(r))
	case FaultEchoPadded:
		pad := f.Size
		if pad <= 0 {
			pad = DefaultEchoPadding
		}
		pad = min(pad, DefaultOversizedBytes)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		b := make([]byte, 0, int(pad)+512)
		b = append(b, strings.Repeat(" ", int(pad))...)
		s.writeRaw(w, status(http.StatusInternalServerError), append(b, dumpRequestHeadersFirst(r)...))
	default:
		s.writeError(w, http.StatusInternalServerError, "internal", "unknown fault "+string(f.Kind), nil, "")
	}
}

// reset drops the connection with a TCP RST (linger 0), sending nothing.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler) // closes the stream without a response
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func dumpRequest(r *http.Request) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s\n", r.Method, r.URL.RequestURI(), r.Proto)
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range r.Header[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	return b.String()
}

// dumpRequestHeadersFirst is the request dump with Authorization first, so
// FaultEchoPadded's key sits right after the padding.
func dumpRequestHeadersFirst(r *http.Request) string {
	return "Authorization: " + r.Header.Get("Authorization") + "\n" + dumpRequest(r)
}

// phpEcho is a PHP-style gateway error echoing the request headers: a JSON
// object that is not the API's error shape, escaped as PHP's json_encode
// with JSON_HEX_TAG|JSON_HEX_AMP|JSON_HEX_APOS|JSON_HEX_QUOT escapes it.
func phpEcho(r *http.Request) []byte {
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	// Authorization first, as a gateway that logs credentials first would:
	// it then lands within the client's short excerpt.
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i] == "Authorization") != (keys[j] == "Authorization") {
			return keys[i] == "Authorization"
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	b.WriteString(`{"error":"Bad Gateway","headers":{`)
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(phpQuote(k))
		b.WriteByte(':')
		b.WriteString(phpQuote(strings.Join(r.Header[k], ", ")))
	}
	b.WriteString(`},"method":`)
	b.WriteString(phpQuote(r.Method))
	b.WriteString(`,"uri":`)
	b.WriteString(phpQuote(r.URL.RequestURI()))
	b.WriteString("}")
	return []byte(b.String())
}

// phpQuote quotes s as a JSON string the way PHP does: "/" as "\/", and
// the HEX_* characters and every non-ASCII or control byte as \u00XX.
func phpQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '/':
			b.WriteString(`\/`)
		case r == '\\':
			b.WriteString(`\\`)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
		case r == '+' || r == '<' || r == '>' || r == '&' || r == '\'' || r == '"' || r < 0x20 || r > 0x7e:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

var htmlPage = []byte(`<!DOCTYPE html>
<html><head><title>502 Bad Gateway</title><style>body{font-family:sans-serif}</style>
<script>window.location.hash="x";</script></head>
<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>
</body></html>
`)

var filler = func() []byte {
	b := make([]byte, 32<<10)
	for i := range b {
		b[i] = 'x'
	}
	return b
}()

type errorBody struct {
	Code    string               `json:"code"`
	Message string               `json:"message"`
	Fields  []versori.FieldError `json:"fields,omitempty"`
	Details string               `json:"details,omitempty"`
}

func (s *Server) writeError(w http.ResponseWriter, status int, code, message string, fields []versori.FieldError, details string) {
	s.writeJSON(w, status, errorBody{Code: code, Message: message, Fields: fields, Details: details})
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":"internal","message":"encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	s.writeRaw(w, status, b)
}

func (s *Server) writeRaw(w http.ResponseWriter, status int, b []byte) {
	s.countStatus(status)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("X-Request-Id", "req-"+strconv.FormatUint(s.reqSeq.Add(1), 10))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (s *Server) countStatus(status int) {
	if status >= 0 && status < len(s.statuses) {
		s.statuses[status].Add(1)
	}
}
