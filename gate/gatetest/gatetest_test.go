package gatetest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

type answer struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

// get(t)(http.Get(...)) reads an answer, failing t on an error.
func get(t *testing.T) func(*http.Response, error) (int, answer) {
	return func(resp *http.Response, err error) (int, answer) {
		t.Helper()
		return read(t, resp, err)
	}
}

func read(t *testing.T, resp *http.Response, err error) (int, answer) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a answer
	if resp.Header.Get("Content-Type") == "application/json" {
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
	}
	return resp.StatusCode, a
}

func TestGetAndPost(t *testing.T) {
	s := NewServer()
	defer s.Close()

	code, a := get(t)(http.Get(s.URL + "/api/v1/query?query=" + url.QueryEscape(`up{job="a"}`)))
	if code != 200 || a.Status != "success" || a.Data.ResultType != "vector" || string(a.Data.Result) != "[]" {
		t.Errorf("default answer: %d %+v, want no data", code, a)
	}
	if s.LastQuery() != `up{job="a"}` {
		t.Errorf("GET: last query %q", s.LastQuery())
	}

	s.SetVector(1, 2)
	code, a = get(t)(http.PostForm(s.URL+"/api/v1/query", url.Values{"query": {"sum(up)"}}))
	if code != 200 || a.Data.ResultType != "vector" || !strings.Contains(string(a.Data.Result), `"metric":{"series":"1"},"value":[`) {
		t.Errorf("vector: %d %s", code, a.Data.Result)
	}
	if s.LastQuery() != "sum(up)" || s.Queries() != 2 {
		t.Errorf("POST: last query %q, %d queries", s.LastQuery(), s.Queries())
	}

	s.SetScalar(0.5)
	_, a = get(t)(http.PostForm(s.URL+"/api/v1/query", url.Values{"query": {"1"}}))
	if a.Data.ResultType != "scalar" || !strings.HasSuffix(string(a.Data.Result), `,"0.5"]`) {
		t.Errorf("scalar: %s %s", a.Data.ResultType, a.Data.Result)
	}

	s.SetError(422, "too many samples")
	code, a = get(t)(http.PostForm(s.URL+"/api/v1/query", url.Values{"query": {"1"}}))
	if code != 422 || a.Status != "error" || a.ErrorType != "execution" || a.Error != "too many samples" {
		t.Errorf("error: %d %+v", code, a)
	}

	code, _ = get(t)(http.Get(s.URL + "/api/v1/query_range?query=up"))
	if code != 404 {
		t.Errorf("query_range: %d, want 404", code)
	}
	req, _ := http.NewRequest(http.MethodDelete, s.URL+"/api/v1/query", nil)
	code, _ = get(t)(http.DefaultClient.Do(req))
	if code != 405 {
		t.Errorf("DELETE: %d, want 405", code)
	}
	if s.Queries() != 4 {
		t.Errorf("%d queries counted, want 4 (not the 404 nor the 405)", s.Queries())
	}
}

func TestHangEndsOnClose(t *testing.T) {
	s := NewServer()
	s.SetHang()
	errc := make(chan error, 1)
	go func() {
		resp, err := http.Get(s.URL + "/api/v1/query?query=up")
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	for s.Queries() == 0 {
		time.Sleep(time.Millisecond)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for the hung query")
	}
	<-errc
	s.Close() // twice is harmless
}

func TestHangEndsWithClient(t *testing.T) {
	s := NewServer()
	defer s.Close()
	s.SetHang()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/api/v1/query?query=up", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a hung query answered")
	}
}

func TestConcurrent(t *testing.T) {
	s := NewServer()
	defer s.Close()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 20 {
				switch (i + j) % 4 {
				case 0:
					s.SetValue(float64(j))
				case 1:
					s.SetNoData()
				case 2:
					s.SetError(503, "busy")
				}
				resp, err := http.PostForm(s.URL+"/api/v1/query", url.Values{"query": {"up"}})
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				_ = s.LastQuery()
			}
		})
	}
	wg.Wait()
	if s.Queries() != 80 {
		t.Errorf("%d queries, want 80", s.Queries())
	}
}
