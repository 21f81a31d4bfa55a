// Package gatetest is a fake Prometheus for tests of code that measures
// gates, in the manner of net/http/httptest: it serves /api/v1/query (GET or
// POST form, as the Prometheus client sends) with whatever answer the test
// scripted last, so a test can make a canary healthy, failing, silent or
// unreachable without running Prometheus.
package gatetest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// Server is a fake Prometheus. Its Set methods replace the answer to every
// later query; all its methods are safe for concurrent use with each other
// and with the queries being served.
type Server struct {
	// URL is the base URL to give gate.Config.URL.
	URL string

	srv  *httptest.Server
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	status  int
	body    []byte
	hang    bool
	queries int
	last    string
}

// NewServer starts a fake Prometheus that answers every query with no data
// (an empty vector), which is what a real one says about a metric nobody
// exports yet. Close it when done.
func NewServer() *Server {
	s := &Server{done: make(chan struct{})}
	s.SetNoData()
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the server, ending any query held by SetHang first so that
// Close does not wait for it.
func (s *Server) Close() {
	s.once.Do(func() { close(s.done) })
	s.srv.Close()
}

// SetValue answers with a vector of one sample of value v.
func (s *Server) SetValue(v float64) { s.SetVector(v) }

// SetVector answers with a vector of one sample per value, in that order,
// each a series of its own ({series="0"}, {series="1"}, ...). With no
// values it is SetNoData.
func (s *Server) SetVector(values ...float64) {
	samples := make([]sample, len(values))
	for i, v := range values {
		samples[i] = sample{Metric: map[string]string{"series": strconv.Itoa(i)}, Value: point(v)}
	}
	s.success("vector", samples)
}

// SetScalar answers with a scalar result, as a query like "scalar(x)" or
// "1" gives.
func (s *Server) SetScalar(v float64) { s.success("scalar", point(v)) }

// SetMatrix answers with a range vector of one series per value, each
// series holding that one value; a real Prometheus gives this to an instant
// query such as "x[5m]".
func (s *Server) SetMatrix(values ...float64) {
	type series struct {
		Metric map[string]string `json:"metric"`
		Values [][2]any          `json:"values"`
	}
	m := make([]series, len(values))
	for i, v := range values {
		m[i] = series{Metric: map[string]string{"series": strconv.Itoa(i)}, Values: [][2]any{point(v)}}
	}
	s.success("matrix", m)
}

// SetString answers with a string result, as the query `"text"` gives.
func (s *Server) SetString(v string) { s.success("string", [2]any{now(), v}) }

// SetNoData answers with an empty vector: the query matched no series.
func (s *Server) SetNoData() { s.success("vector", []sample{}) }

// SetError answers with HTTP status and a Prometheus error body carrying
// msg. The error type is the one Prometheus uses with that status (400
// bad_data, 422 execution, 503 unavailable, otherwise internal); note that
// the Prometheus client reads the body only of a 400 or 422, and reports any
// other status by its code.
func (s *Server) SetError(status int, msg string) {
	typ := "internal"
	switch status {
	case http.StatusBadRequest:
		typ = "bad_data"
	case http.StatusUnprocessableEntity:
		typ = "execution"
	case http.StatusServiceUnavailable:
		typ = "unavailable"
	}
	b, _ := json.Marshal(map[string]string{"status": "error", "errorType": typ, "error": msg})
	s.set(status, b)
}

// SetRaw answers with HTTP status and body as given, for answers the other
// Set methods cannot make (a proxy's HTML page, truncated JSON, a native
// histogram).
func (s *Server) SetRaw(status int, body string) { s.set(status, []byte(body)) }

// SetHang makes every later query wait without answering until the client
// gives up or the server is closed: a Prometheus that accepted the
// connection and then stalled. Any other Set method ends it.
func (s *Server) SetHang() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hang = true
}

// Queries is how many queries were received, so that a test can tell a
// measurement that asked from one that gave up before asking.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// LastQuery is the query parameter of the latest query received, so that a
// test can check what was asked.
func (s *Server) LastQuery() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// point is a Prometheus [time, "value"] pair; values are strings on the
// wire, which is how NaN and ±Inf travel.
func point(v float64) [2]any { return [2]any{now(), strconv.FormatFloat(v, 'f', -1, 64)} }

func now() float64 { return float64(time.Now().UnixMilli()) / 1000 }

func (s *Server) success(resultType string, result any) {
	b, err := json.Marshal(map[string]any{
		"status": "success",
		"data":   map[string]any{"resultType": resultType, "result": result},
	})
	if err != nil {
		panic("gatetest: " + err.Error())
	}
	s.set(http.StatusOK, b)
}

func (s *Server) set(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body, s.hang = status, body, false
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.queries++
	s.last = r.Form.Get("query")
	status, body, hang := s.status, s.body, s.hang
	s.mu.Unlock()
	if hang {
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
