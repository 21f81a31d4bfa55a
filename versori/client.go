package versori

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/versori/import-worker/internal/textline"
)

// Client calls the Connect API. It is safe for concurrent use; create one
// per process and share it, so its connection pool is shared too.
type Client struct {
	base      string
	auth      string // "<scheme> <key>": never printed, see Format
	userAgent string
	timeout   time.Duration
	maxBody   int64
	hc        *http.Client
	scrubber  *scrubber
	now       func() time.Time
}

// New validates cfg and returns a Client. The error names the offending
// setting and never contains the key.
func New(cfg Config) (*Client, error) {
	r, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("versori: %w", err)
	}
	var hc http.Client
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = r.conns
		if t.MaxIdleConns < r.conns {
			t.MaxIdleConns = r.conns
		}
		hc.Transport = t
	}
	hc.CheckRedirect = checkRedirect
	return &Client{
		base:      r.base,
		auth:      r.scheme + " " + r.key,
		userAgent: r.userAgent,
		timeout:   r.timeout,
		maxBody:   r.maxBody,
		hc:        &hc,
		scrubber:  newScrubber(r.key),
		now:       time.Now,
	}, nil
}

func (c *Client) scrub(s string) string { return c.scrubber.Replace(s) }

// String describes the client without its key. String, GoString and
// Format have value receivers so a copied Client value is covered too.
func (c Client) String() string {
	scheme, _, _ := strings.Cut(c.auth, " ")
	return fmt.Sprintf("versori.Client{BaseURL: %q, AuthScheme: %q, APIKey: %q, Timeout: %s}", c.base, scheme, redacted, c.timeout)
}

// GoString is String: %#v must not print the key either.
func (c Client) GoString() string { return c.String() }

// Format prints String for every verb, so fmt never walks the client's
// fields by reflection and cannot reach the key.
func (c Client) Format(f fmt.State, verb rune) { formatRedacted(f, verb, c.String()) }

// BaseURL returns the base URL in use, without a trailing slash.
func (c *Client) BaseURL() string { return c.base }

// CloseIdleConnections closes pooled connections, for a clean shutdown.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// maxRedirects bounds the redirects followed within one call.
const maxRedirects = 3

// checkRedirect follows only 307 and 308 redirects to the same scheme and
// host (which keep the method, and may keep the key). Anything else (another
// host, a downgrade to http, a 301/302/303 that would turn the POST into a
// GET) is not followed: the redirect response itself becomes the result and
// is reported as an *Error, and the key is never sent elsewhere.
func checkRedirect(req *http.Request, via []*http.Request) error {
	first := via[0]
	switch {
	case len(via) > maxRedirects,
		req.Response == nil,
		req.Response.StatusCode != http.StatusTemporaryRedirect && req.Response.StatusCode != http.StatusPermanentRedirect,
		req.URL.Scheme != first.URL.Scheme,
		!strings.EqualFold(req.URL.Host, first.URL.Host):
		return http.ErrUseLastResponse
	}
	return nil
}

// ImportPublicConnectorVersion copies version of the public connector
// connectorID into organisation orgID, and returns the organisation's new
// (draft) connector.
//
// version is a version name, or "latest" or "default", which the API
// resolves when the call is made. The IDs are parsed already (ParseOrgID,
// ParseConnectorID); a zero one, and an invalid version name, are refused
// before any request is sent (an *InvalidIDError, class invalid).
//
// A 409 is returned as an *Error of class already_present: the organisation
// already holds the version, which callers count as success. Every other
// failure is an *Error (the server answered) or a transport error; use
// Classify to get its class.
//
// A 2xx with an empty body (a 204, or a 200 with nothing or only
// whitespace in it) is a success, class imported: the status says the
// import was carried out, and a retry could only meet a 409. The API's
// answer is missing, though, so the Connector returned holds nothing but
// its RateLimit; an empty ID is how a caller tells (and records) that the
// body was empty. A non-empty body that is not a Connector stays an
// *Error of class server_error.
//
// The returned Connector's RateLimit, or the *Error's, holds what the
// response's rate-limit headers said; see RateLimitOf.
func (c *Client) ImportPublicConnectorVersion(ctx context.Context, orgID OrgID, connectorID ConnectorID, version string) (*Connector, error) {
	const op = "import connector version"
	path, err := versionPath(op, orgID, connectorID, version)
	if err != nil {
		return nil, err
	}
	var out Connector
	rl, err := c.do(ctx, op, http.MethodPost, path+"/library/import", nil, &out, true)
	if err != nil {
		return nil, err
	}
	out.RateLimit = rl
	return &out, nil
}

// GetConnectorVersion returns a version of a connector that organisation
// orgID holds; an *Error of class not_found when it holds none by that name.
func (c *Client) GetConnectorVersion(ctx context.Context, orgID OrgID, connectorID ConnectorID, version string) (*ConnectorVersion, error) {
	const op = "get connector version"
	path, err := versionPath(op, orgID, connectorID, version)
	if err != nil {
		return nil, err
	}
	var out ConnectorVersion
	if _, err := c.do(ctx, op, http.MethodGet, path, nil, &out, false); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListConnectorVersions returns a page of the versions of connectorID that
// organisation orgID holds.
func (c *Client) ListConnectorVersions(ctx context.Context, orgID OrgID, connectorID ConnectorID, page PageOptions) (*ConnectorVersionPage, error) {
	const op = "list connector versions"
	if err := validateIDs(op, orgID, connectorID); err != nil {
		return nil, err
	}
	var out ConnectorVersionPage
	if _, err := c.do(ctx, op, http.MethodGet, "/o/"+string(orgID)+"/connectors/"+string(connectorID)+"/versions", page.query(), &out, false); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListPublicConnectors returns a page of Versori's public connector
// catalogue.
func (c *Client) ListPublicConnectors(ctx context.Context, page PageOptions) (*ConnectorPage, error) {
	const op = "list public connectors"
	var out ConnectorPage
	if _, err := c.do(ctx, op, http.MethodGet, "/connectors", page.query(), &out, false); err != nil {
		return nil, err
	}
	return &out, nil
}

func (p PageOptions) query() url.Values {
	q := url.Values{}
	if p.First > 0 {
		q.Set("first", strconv.Itoa(p.First))
	}
	if p.After != "" {
		q.Set("after", p.After)
	}
	if p.Before != "" {
		q.Set("before", p.Before)
	}
	return q
}

// validateIDs refuses zero IDs: a parsed ID is valid, and the zero value is
// the one that is not parsed (a field left unset).
func validateIDs(op string, orgID OrgID, connectorID ConnectorID) error {
	if orgID == "" {
		return fmt.Errorf("versori: %s: %w", op, &InvalidIDError{Kind: "organisation ID", ID: `""`, Problem: "is empty"})
	}
	if connectorID == "" {
		return fmt.Errorf("versori: %s: %w", op, &InvalidIDError{Kind: "connector ID", ID: `""`, Problem: "is empty"})
	}
	return nil
}

func versionPath(op string, orgID OrgID, connectorID ConnectorID, version string) (string, error) {
	if err := validateIDs(op, orgID, connectorID); err != nil {
		return "", err
	}
	if err := ValidateVersion(version); err != nil {
		return "", fmt.Errorf("versori: %s: %w", op, err)
	}
	return "/o/" + string(orgID) + "/connectors/" + string(connectorID) + "/versions/" + url.PathEscape(version), nil
}

// scrubbedError is a transport error whose text has been scrubbed of the
// key. Unwrap gives the cause, for errors.Is and errors.As; its own text is
// not scrubbed, so print the scrubbedError, not what it wraps.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// Timeout lets callers that only test for net.Error-style timeouts see
// through the wrapper.
func (e *scrubbedError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.err, &t) && t.Timeout()
}

// errBodyTooLarge marks a body cut at the size limit.
var errBodyTooLarge = errors.New("response body too large")

// drainBytes is how much of an unread body is drained before closing it so
// the connection can be reused; larger remainders cost a new connection,
// which is cheaper than reading them.
const drainBytes = 4 << 10

// do sends one request and decodes a 2xx JSON body into out, and returns
// what the response's rate-limit headers said. Non-2xx responses become
// *Error (carrying the rate limit too); transport failures are returned
// wrapped with op. A 2xx with an empty (or all-whitespace) body leaves out
// alone and succeeds when emptyOK, else is a server_error.
func (c *Client) do(ctx context.Context, op, method, path string, query url.Values, out any, emptyOK bool) (RateLimit, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return unknownRateLimit, fmt.Errorf("versori: %s: %w", op, err)
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)

	resp, err := c.hc.Do(req)
	if err != nil {
		// *url.Error names the method and URL (IDs only), but its cause
		// can quote the server (an unparseable Location header, say), so
		// the text is scrubbed; the cause stays reachable for Classify.
		return unknownRateLimit, &scrubbedError{msg: c.scrub(fmt.Sprintf("versori: %s: %v", op, err)), err: err}
	}
	defer func() {
		_, _ = io.CopyN(io.Discard, resp.Body, drainBytes)
		_ = resp.Body.Close()
	}()
	rl := parseRateLimit(resp.Header, c.now())

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Read past the limit so that a key straddling it is scrubbed
		// whole; excerpt cuts only after scrubbing. A body cut here or by
		// a dropped connection still yields an error: the status alone
		// decides the class.
		limit := min(c.maxBody, maxErrorBodyBytes) + maxScrubMargin
		body, _ := readLimited(resp.Body, limit)
		e := decodeError(op, resp.StatusCode, resp.Header, body, c.now(), c.scrub)
		if resp.StatusCode >= 300 && resp.StatusCode < 400 && e.Message == "" {
			e.Message = "redirect not followed"
			if loc, err := resp.Location(); err == nil {
				e.Message += " (to " + c.scrub(textline.Collapse(loc.Scheme+"://"+loc.Host)) + ")"
			}
		}
		return rl, e
	}

	var body []byte
	if resp.ContentLength > c.maxBody {
		// Refused on the declared length alone, without reading any of it.
		err = errBodyTooLarge
	} else {
		body, err = readLimited(resp.Body, c.maxBody)
	}
	if errors.Is(err, errBodyTooLarge) {
		return rl, &Error{
			Op: op, StatusCode: resp.StatusCode, Class: ClassServerError,
			RequestID: keep(requestID(resp.Header), maxRequestIDLen, c.scrub),
			Message:   fmt.Sprintf("response body larger than %d bytes", c.maxBody),
			RateLimit: rl,
		}
	}
	if err != nil {
		// The connection failed while the body was read: the call's
		// outcome is unknown, like any transport failure.
		return unknownRateLimit, &scrubbedError{msg: c.scrub(fmt.Sprintf("versori: %s: reading response: %v", op, err)), err: err}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if emptyOK {
			return rl, nil // out left as it was
		}
		return rl, &Error{
			Op: op, StatusCode: resp.StatusCode, Class: ClassServerError,
			RequestID: keep(requestID(resp.Header), maxRequestIDLen, c.scrub),
			Message:   "empty response body",
			RateLimit: rl,
		}
	}
	if err := json.Unmarshal(body, out); err != nil {
		// The call may have been carried out: a server_error is retried,
		// and a retry of an import that did happen meets a 409.
		return rl, &Error{
			Op: op, StatusCode: resp.StatusCode, Class: ClassServerError,
			RequestID:   keep(requestID(resp.Header), maxRequestIDLen, c.scrub),
			Message:     keep("decoding response: "+err.Error(), maxFieldLen, c.scrub),
			BodyExcerpt: excerpt(body, c.scrub),
			RateLimit:   rl,
		}
	}
	return rl, nil
}

// readLimited reads at most limit bytes of r, and reports errBodyTooLarge
// (with the first limit bytes) when the body is longer.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if int64(len(b)) > limit {
		return b[:limit], errBodyTooLarge
	}
	return b, err
}
