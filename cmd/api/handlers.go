package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/versori/import-worker/gate"
	"github.com/versori/import-worker/internal/apitoken"
	"github.com/versori/import-worker/orglist"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/tasks"
)

// createRequest is the JSON body of POST /v1/rollouts, and, for NDJSON and
// CSV bodies, the query parameters of the same names.
type createRequest struct {
	RolloutID       string     `json:"rollout_id"`
	ConnectorID     string     `json:"connector_id"`
	Version         string     `json:"version"`
	SkipInvalid     bool       `json:"skip_invalid"`
	Waves           wavesField `json:"waves"`
	Bake            string     `json:"bake"`
	MaxFailureRatio *float64   `json:"max_failure_ratio"`
	Weight          *float64   `json:"weight"`
	Gate            *gate.Spec `json:"gate"`
	CallbackURL     string     `json:"callback_url"`
}

// wavesField is the waves of a create request: "10,10%,100%", or the same
// as an array of counts and percentages.
type wavesField struct {
	set  bool
	list string
}

func (w *wavesField) UnmarshalJSON(b []byte) error {
	w.set = true
	if err := json.Unmarshal(b, &w.list); err == nil {
		return nil
	}
	var items []any
	if err := json.Unmarshal(b, &items); err != nil {
		return errors.New(`want a string such as "10,10%,100%" or an array such as [10, "10%", "100%"]`)
	}
	parts := make([]string, len(items))
	for i, it := range items {
		switch v := it.(type) {
		case string:
			parts[i] = v
		case float64:
			parts[i] = strconv.FormatFloat(v, 'f', -1, 64)
		default:
			return fmt.Errorf("waves[%d]: want a count or a percentage string", i)
		}
	}
	w.list = strings.Join(parts, ",")
	return nil
}

// invalidAnswer is the 422 answer for invalid organisation IDs.
type invalidAnswer struct {
	Error string `json:"error"`
	// Invalid lists the first rollout.MaxListedInvalid invalid IDs;
	// InvalidCount counts them all.
	Invalid      []rollout.Invalid `json:"invalid"`
	InvalidCount int               `json:"invalid_count"`
}

// badRequest is a body that cannot be read as what its content type says.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badf(format string, args ...any) error { return &badRequest{fmt.Sprintf(format, args...)} }

func (s *server) create(w http.ResponseWriter, r *http.Request, _ apitoken.Entry) {
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil && r.Header.Get("Content-Type") != "" {
		writeError(w, http.StatusUnsupportedMediaType, "bad Content-Type: "+err.Error())
		return
	}
	switch ct {
	case "application/json", "application/x-ndjson", "text/csv":
	default:
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: want application/json, application/x-ndjson or text/csv", r.Header.Get("Content-Type")))
		return
	}
	// Redis first: a request that cannot be served is refused before its
	// body is read, and nothing is half-created.
	if !s.needRedis(w, r) {
		return
	}
	spool, err := rollout.NewSpool()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer spool.Close()
	var req createRequest
	switch ct {
	case "application/json":
		err = readJSONCreate(http.MaxBytesReader(w, r.Body, MaxJSONBody), &req, spool)
	case "application/x-ndjson":
		if req, err = queryCreate(r); err == nil {
			err = readNDJSON(http.MaxBytesReader(w, r.Body, MaxStreamBody), spool)
		}
	case "text/csv":
		if req, err = queryCreate(r); err == nil {
			err = readCSV(http.MaxBytesReader(w, r.Body, MaxStreamBody), spool)
		}
	}
	var br *badRequest
	switch {
	case errors.As(err, &br):
		writeError(w, http.StatusBadRequest, br.msg)
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	spec, err := s.checkCreate(req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := rollout.Check(spec, spool); err != nil {
		if spool.InvalidCount > 0 && !spec.SkipInvalid {
			writeJSON(w, http.StatusUnprocessableEntity, invalidAnswer{
				Error:   fmt.Sprintf("%d invalid organisation ID(s); nothing enqueued: fix the list or set skip_invalid", spool.InvalidCount),
				Invalid: spool.Invalid, InvalidCount: spool.InvalidCount,
			})
			return
		}
		writeError(w, http.StatusUnprocessableEntity, "no valid organisations in the request")
		return
	}
	if !s.needRedis(w, r) {
		return
	}
	res, err := s.m.Enqueue(r.Context(), spec, spool, nil)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	code := http.StatusOK
	if res.Created {
		code = http.StatusCreated
	}
	w.Header().Set("Location", "/v1/rollouts/"+res.RolloutID)
	writeJSON(w, code, res)
}

// checkCreate validates the fields besides the organisations.
func (s *server) checkCreate(req createRequest) (rollout.Spec, error) {
	spec := rollout.Spec{ID: req.RolloutID, Version: req.Version, SkipInvalid: req.SkipInvalid, CallbackURL: req.CallbackURL}
	var missing []string
	if req.ConnectorID == "" {
		missing = append(missing, "connector_id")
	}
	if req.Version == "" {
		missing = append(missing, "version")
	}
	if len(missing) > 0 {
		return spec, &rollout.InputError{Err: fmt.Errorf("missing %s", strings.Join(missing, " and "))}
	}
	if req.Waves.set {
		if _, err := rollout.ParseWaves(req.Waves.list); err != nil {
			return spec, &rollout.InputError{Err: err}
		}
		spec.Waves = req.Waves.list
	}
	if req.Bake != "" {
		d, err := time.ParseDuration(req.Bake)
		if err != nil {
			return spec, &rollout.InputError{Err: fmt.Errorf("bake %q: want a duration such as 2s or 5m", req.Bake)}
		}
		spec.Bake = d
	}
	spec.MaxFailureRatio = req.MaxFailureRatio
	if req.Weight != nil {
		if err := rollout.CheckWeight(*req.Weight); err != nil {
			return spec, &rollout.InputError{Err: err}
		}
		spec.Weight = *req.Weight
	}
	spec.Gate = req.Gate
	if spec.Waves == "" && (spec.Bake != 0 || spec.MaxFailureRatio != nil || spec.Gate != nil) {
		return spec, &rollout.InputError{Err: errors.New("bake, max_failure_ratio and gate act between waves: set waves too")}
	}
	if req.CallbackURL != "" {
		if _, err := s.cfg.Allowed.Check(req.CallbackURL); err != nil {
			return spec, &rollout.InputError{Err: err}
		}
	}
	// The edge: the connector ID is parsed here (after the rollout ID,
	// which Canonical checks first too, so the first problem is named).
	if spec.ID != "" {
		if err := tasks.ValidateRolloutID(spec.ID); err != nil {
			return spec, &rollout.InputError{Err: err}
		}
	}
	connector, err := rollout.ParseConnector(req.ConnectorID)
	if err != nil {
		return spec, err
	}
	spec.ConnectorID = connector
	return spec.Canonical()
}

// queryCreate reads the fields of an NDJSON or CSV create from the query.
func queryCreate(r *http.Request) (createRequest, error) {
	q := r.URL.Query()
	req := createRequest{
		RolloutID: q.Get("rollout_id"), ConnectorID: q.Get("connector_id"), Version: q.Get("version"),
		CallbackURL: q.Get("callback_url"),
	}
	if v := q.Get("skip_invalid"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return req, badf("skip_invalid=%q: want true or false", v)
		}
		req.SkipInvalid = b
	}
	if q.Has("waves") {
		req.Waves = wavesField{set: true, list: q.Get("waves")}
	}
	req.Bake = q.Get("bake")
	for _, f := range []struct {
		name string
		dst  **float64
	}{{"max_failure_ratio", &req.MaxFailureRatio}, {"weight", &req.Weight}} {
		if v := q.Get(f.name); v != "" {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return req, badf("%s=%q: want a number", f.name, v)
			}
			*f.dst = &n
		}
	}
	if v := q.Get("gate"); v != "" {
		req.Gate = new(gate.Spec)
		if err := json.Unmarshal([]byte(v), req.Gate); err != nil {
			return req, badf("gate: %v", err)
		}
	}
	return req, nil
}

// readJSONCreate reads a JSON create request, streaming the organisations
// array into the spool (index: 0-based position in the array).
func readJSONCreate(body io.Reader, req *createRequest, spool *rollout.Spool) error {
	dec := json.NewDecoder(body)
	tok, err := dec.Token()
	if err != nil {
		return jsonErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return badf("malformed JSON: want an object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return jsonErr(err)
		}
		key, _ := tok.(string)
		if seen[key] {
			return badf("field %q given twice", key)
		}
		seen[key] = true
		var dst any
		switch key {
		case "organisations":
			if err := readJSONOrgs(dec, spool); err != nil {
				return err
			}
			continue
		case "rollout_id":
			dst = &req.RolloutID
		case "connector_id":
			dst = &req.ConnectorID
		case "version":
			dst = &req.Version
		case "skip_invalid":
			dst = &req.SkipInvalid
		case "waves":
			dst = &req.Waves
		case "bake":
			dst = &req.Bake
		case "max_failure_ratio":
			dst = &req.MaxFailureRatio
		case "weight":
			dst = &req.Weight
		case "gate":
			dst = &req.Gate
		case "callback_url":
			dst = &req.CallbackURL
		default:
			return badf("unknown field %q", key)
		}
		if err := dec.Decode(dst); err != nil {
			return jsonErr(fmt.Errorf("field %q: %w", key, err))
		}
	}
	if _, err := dec.Token(); err != nil {
		return jsonErr(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badf("malformed JSON: data after the object")
	}
	if !seen["organisations"] {
		return badf("missing organisations (or send them as an application/x-ndjson or text/csv body)")
	}
	return nil
}

func readJSONOrgs(dec *json.Decoder, spool *rollout.Spool) error {
	tok, err := dec.Token()
	if err != nil {
		return jsonErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return badf("organisations: want an array of organisation IDs")
	}
	for i := 0; dec.More(); i++ {
		tok, err := dec.Token()
		if err != nil {
			return jsonErr(err)
		}
		id, ok := tok.(string)
		if !ok {
			if _, isDelim := tok.(json.Delim); isDelim {
				return badf("organisations[%d]: want a string, not an array or object", i)
			}
			spool.AddInvalid(i, fmt.Sprint(tok), errors.New("not a string"))
			continue
		}
		if _, _, err := spool.Add(i, id); err != nil {
			return err
		}
	}
	_, err = dec.Token() // ']'
	return jsonErr(err)
}

// jsonErr turns a decoding error into a 400, keeping a body-size error for
// 413 and other read errors as they are.
func jsonErr(err error) error {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &mbe):
		return err
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return badf("malformed JSON: the body ends early")
	case errors.As(err, &se), errors.As(err, &te):
		return badf("malformed JSON: %v", err)
	}
	if strings.Contains(err.Error(), "invalid character") || strings.Contains(err.Error(), "cannot unmarshal") {
		return badf("malformed JSON: %v", err)
	}
	return err
}

// maxLine bounds one NDJSON line.
const maxLine = 64 << 10

// readNDJSON reads one organisation a line: a JSON string, or an object
// with an organisation_id string. Blank lines are skipped; index is the
// 0-based count of the other lines.
func readNDJSON(body io.Reader, spool *rollout.Spool) error {
	br := bufio.NewReaderSize(body, 64<<10)
	index := 0
	for {
		line, err := br.ReadSlice('\n')
		tooLong := false
		for errors.Is(err, bufio.ErrBufferFull) {
			tooLong = true
			_, err = br.ReadSlice('\n')
		}
		if err != nil && err != io.EOF {
			return err
		}
		text := bytes.TrimSpace(line)
		if tooLong {
			spool.AddInvalid(index, "", fmt.Errorf("line longer than %d bytes", maxLine))
			index++
		} else if len(text) > 0 {
			id, perr := ndjsonID(text)
			if perr != nil {
				spool.AddInvalid(index, string(truncateBytes(text, 80)), perr)
			} else if _, _, werr := spool.Add(index, id); werr != nil {
				return werr
			}
			index++
		}
		if err == io.EOF {
			return nil
		}
	}
}

func ndjsonID(line []byte) (string, error) {
	switch line[0] {
	case '"':
		var s string
		if err := json.Unmarshal(line, &s); err != nil {
			return "", errors.New("not a JSON string")
		}
		return s, nil
	case '{':
		var o struct {
			OrganisationID *string `json:"organisation_id"`
		}
		if err := json.Unmarshal(line, &o); err != nil || o.OrganisationID == nil {
			return "", errors.New(`not a JSON object with an "organisation_id" string`)
		}
		return *o.OrganisationID, nil
	}
	return "", errors.New(`want a JSON string or {"organisation_id": "..."}`)
}

func truncateBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// readCSV reads a CSV with an organisation_id column, or a plain list of
// one ID a line, as `enqueue --orgs` does (orglist); index is the 1-based
// line number.
func readCSV(body io.Reader, spool *rollout.Spool) error {
	lr := orglist.NewReader(body, orglist.Options{})
	for {
		ent, err := lr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		var he *orglist.HeaderError
		var le *orglist.LineError
		switch {
		case errors.As(err, &he), errors.As(err, &le):
			return badf("CSV body: %v", err)
		case err != nil:
			return err
		}
		if ent.Err != nil {
			spool.AddInvalid(ent.Line, "", ent.Err)
			continue
		}
		if _, err := spool.AddID(ent.ID); err != nil {
			return err
		}
	}
}

func (s *server) list(w http.ResponseWriter, r *http.Request, _ apitoken.Entry) {
	limit := rollout.DefaultListLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit=%q: want a whole number from 1 to %d", v, MaxListLimit))
			return
		}
		limit = n
	}
	rs, err := s.m.List(r.Context(), limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if rs == nil {
		rs = []rollout.Summary{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"rollouts": rs})
}

// rolloutID checks the {id} of the path: 400 when it cannot name a rollout.
func rolloutID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if err := tasks.ValidateRolloutID(id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return id, true
}

func (s *server) status(w http.ResponseWriter, r *http.Request, _ apitoken.Entry) {
	id, ok := rolloutID(w, r)
	if !ok {
		return
	}
	st, err := s.m.Status(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *server) delete(w http.ResponseWriter, r *http.Request, _ apitoken.Entry) {
	id, ok := rolloutID(w, r)
	if !ok || !s.needRedis(w, r) {
		return
	}
	force := false
	if v := r.URL.Query().Get("force"); v != "" {
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("force=%q: want true or false", v))
			return
		}
	}
	res, err := s.m.Remove(r.Context(), id, rollout.RemoveOptions{Force: force})
	var ae *rollout.ActiveError
	if errors.As(err, &ae) {
		writeError(w, http.StatusConflict, fmt.Sprintf("rollout %s is active (%d organisation(s) pending): cancel it first (POST /v1/rollouts/%s/cancel) or delete with ?force=true", id, ae.Pending, id))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !res.Deleted {
		s.fail(w, r, rollout.ErrNotFound)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *server) report(w http.ResponseWriter, r *http.Request, _ apitoken.Entry) {
	id, ok := rolloutID(w, r)
	if !ok {
		return
	}
	format, ctype, ok := negotiate(r.Header.Get("Accept"))
	if !ok {
		writeError(w, http.StatusNotAcceptable, "Accept: want application/x-ndjson (the default) or text/csv")
		return
	}
	var f rollout.Filter
	q := r.URL.Query()
	for _, v := range splitList(q["state"]) {
		st, err := rollout.ParseState(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		f.States = append(f.States, st)
	}
	for _, v := range splitList(q["class"]) {
		c, err := rollout.ParseClass(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		f.Classes = append(f.Classes, c)
	}
	_, c, err := s.m.Get(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(http.StatusOK)
	rw, _ := rollout.NewRowWriter(w, format)
	if _, err = s.m.Report(r.Context(), id, f, c.ByVersion, rw.Write); err == nil {
		err = rw.Close()
	}
	if err != nil {
		// The status is sent: cut the stream off, so the client sees a
		// broken answer rather than a short report.
		s.log.Warn("report stream aborted", "rollout", id, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// negotiate picks the report format from Accept.
func negotiate(accept string) (format, ctype string, ok bool) {
	if strings.TrimSpace(accept) == "" {
		return rollout.FormatNDJSON, "application/x-ndjson", true
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "application/x-ndjson", "*/*", "application/*":
			return rollout.FormatNDJSON, "application/x-ndjson", true
		case "text/csv", "text/*":
			return rollout.FormatCSV, "text/csv; charset=utf-8", true
		}
	}
	return "", "", false
}

func splitList(vs []string) []string {
	var out []string
	for _, v := range vs {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// readSmallJSON decodes an optional small JSON body into v; an empty body
// leaves v alone.
func readSmallJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSmallBody))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit))
		return false
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return true
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type: want application/json")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "malformed JSON: data after the object")
		return false
	}
	return true
}

func (s *server) retry(w http.ResponseWriter, r *http.Request, _ apitoken.Entry) {
	id, ok := rolloutID(w, r)
	if !ok {
		return
	}
	var req struct {
		Classes []string `json:"classes"`
	}
	if !readSmallJSON(w, r, &req) || !s.needRedis(w, r) {
		return
	}
	res, err := s.m.Retry(r.Context(), id, req.Classes)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *server) cancel(w http.ResponseWriter, r *http.Request, _ apitoken.Entry) {
	id, ok := rolloutID(w, r)
	if !ok || !s.needRedis(w, r) {
		return
	}
	if _, err := s.m.Cancel(r.Context(), id); err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.m.Status(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// promote releases the next wave; 409 when there is none to release.
func (s *server) promote(w http.ResponseWriter, r *http.Request, _ apitoken.Entry) {
	id, ok := rolloutID(w, r)
	if !ok || !s.needRedis(w, r) {
		return
	}
	st, err := s.m.Promote(r.Context(), id)
	switch {
	case errors.Is(err, rollout.ErrCannotPromote):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		s.fail(w, r, err)
	default:
		writeJSON(w, http.StatusOK, st)
	}
}

func (s *server) pause(pause bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ apitoken.Entry) {
		queue := s.m.Queue()
		if q := r.URL.Query().Get("queue"); q != "" {
			queue = q
		}
		if !s.needRedis(w, r) {
			return
		}
		changed, err := s.m.SetPaused(queue, pause)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"queue": queue, "paused": pause, "changed": changed})
	}
}
