// Package openapitest checks HTTP answers against the API's OpenAPI 3.1
// document (cmd/api/openapi.json) with kin-openapi: the status code must be
// documented for the route, the Content-Type listed, and the body valid
// against its schema (for NDJSON, every line against the row schema).
// Tests only.
package openapitest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// Validator validates answers against a document.
type Validator struct {
	Doc    *openapi3.T
	router routers.Router
}

// New loads and validates the document.
func New(tb testing.TB, doc []byte) *Validator {
	tb.Helper()
	loader := openapi3.NewLoader()
	d, err := loader.LoadFromData(doc)
	if err != nil {
		tb.Fatalf("load OpenAPI document: %v", err)
	}
	if !strings.HasPrefix(d.OpenAPI, "3.1") {
		tb.Fatalf("OpenAPI version %q, want 3.1.x", d.OpenAPI)
	}
	if err := d.Validate(context.Background()); err != nil {
		tb.Fatalf("OpenAPI document invalid: %v", err)
	}
	// The routes are matched on the path alone, whatever host the test
	// server listens on.
	d.Servers = nil
	r, err := legacy.NewRouter(d)
	if err != nil {
		tb.Fatalf("router: %v", err)
	}
	return &Validator{Doc: d, router: r}
}

// Check validates one answer to method and target (a path with its query)
// and returns an error describing every mismatch.
func (v *Validator) Check(method, target string, reqHeader http.Header, code int, respHeader http.Header, body []byte) error {
	u, err := url.Parse(target)
	if err != nil {
		return err
	}
	u.Scheme, u.Host = "http", "localhost"
	req, _ := http.NewRequest(method, u.String(), nil)
	for k, vs := range reqHeader {
		req.Header[k] = vs
	}
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("%s %s: no route in the document: %v", method, u.Path, err)
	}
	ndjson := strings.HasPrefix(respHeader.Get("Content-Type"), "application/x-ndjson")
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status: code,
		Header: respHeader,
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true, MultiError: true, ExcludeResponseBody: ndjson,
		},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return fmt.Errorf("%s %s -> %d: %v\nbody: %.500s", method, u.Path, code, err, body)
	}
	if ndjson {
		return v.checkNDJSON(route, code, body)
	}
	return nil
}

func (v *Validator) checkNDJSON(route *routers.Route, code int, body []byte) error {
	r := route.Operation.Responses.Status(code)
	if r == nil || r.Value == nil {
		return fmt.Errorf("%s: no response %d", route.Path, code)
	}
	mt := r.Value.Content.Get("application/x-ndjson")
	if mt == nil || mt.Schema == nil {
		return fmt.Errorf("%s: response %d has no application/x-ndjson schema", route.Path, code)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var val any
		if err := json.Unmarshal(sc.Bytes(), &val); err != nil {
			return fmt.Errorf("%s: NDJSON line %d: %v", route.Path, n, err)
		}
		if err := mt.Schema.Value.VisitJSON(val, openapi3.EnableJSONSchema2020()); err != nil {
			return fmt.Errorf("%s: NDJSON line %d: %v", route.Path, n, err)
		}
	}
	return sc.Err()
}

// Do sends req with client, reads the answer and checks it; it fails tb on
// a mismatch.
func (v *Validator) Do(tb testing.TB, client *http.Client, req *http.Request) (*http.Response, []byte) {
	tb.Helper()
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	if err := v.Check(req.Method, req.URL.RequestURI(), req.Header, resp.StatusCode, resp.Header, body); err != nil {
		tb.Error(err)
	}
	return resp, body
}
