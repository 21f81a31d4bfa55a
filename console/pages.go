package console

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/tasks"
)

// State names a rollout's state as the console shows it.
func State(done bool, cancelled int64, paused bool) string {
	switch {
	case done && cancelled > 0:
		return "cancelled"
	case done:
		return "done"
	case paused:
		return "paused"
	}
	return "running"
}

type listRow struct {
	rollout.Summary
	State    string
	Finished int64
	Rate     float64
	ETA      *float64
}

func (c *Console) list(w http.ResponseWriter, r *http.Request, u *user) {
	rs, err := c.m.List(r.Context(), ListLimit)
	if err != nil {
		c.fail(w, r, u, err)
		return
	}
	now := c.now()
	rows := make([]listRow, len(rs))
	for i, s := range rs {
		row := listRow{Summary: s, State: State(s.Done, s.Cancelled, false), Finished: s.Succeeded + s.Failed + s.Cancelled}
		st := rollout.Status{Done: s.Done, Pending: s.Pending}
		if el := now.Sub(s.CreatedAt).Seconds(); el > 0 && !s.Done {
			st.SetRate(float64(row.Finished) / el)
		} else {
			st.SetRate(0)
		}
		row.Rate, row.ETA = st.RatePerSecond, st.ETASeconds
		rows[i] = row
	}
	c.render(w, http.StatusOK, "list", view{Title: "Rollouts", User: u, Data: rows})
}

// liveStatus is the status object of the API with the console's state.
type liveStatus struct {
	rollout.Status
	State    string `json:"state"`
	Finished int64  `json:"finished"`
	Queue    string `json:"queue"`
}

// load reads a rollout's status as GET /v1/rollouts/{id} does, with its
// queue.
func (c *Console) load(ctx context.Context, id string) (ledger.Rollout, liveStatus, error) {
	ro, counts, err := c.m.Get(ctx, id)
	if err != nil {
		return ro, liveStatus{}, err
	}
	st := rollout.NewStatus(ro, counts)
	if el := c.now().Sub(ro.CreatedAt).Seconds(); el > 0 {
		st.SetRate(float64(st.Finished()) / el)
	}
	q := c.m.QueueOf(ro)
	if err := c.m.Decorate(ctx, &st, q); err != nil {
		return ro, liveStatus{}, err
	}
	state := State(st.Done, st.Cancelled, st.QueuePaused)
	if st.State == rollout.StateHalted || st.State == rollout.StateBaking {
		state = st.State
	}
	return ro, liveStatus{Status: st, State: state, Finished: st.Finished(), Queue: q}, nil
}

type classCount struct {
	Class    string
	Count    int64
	Retrying int64
}

type orgRow struct {
	rollout.Row
	Failed bool
}

type rolloutData struct {
	S                  liveStatus
	Failed, Succeeded  []classCount
	Retrying           []classCount
	States, Classes    []string
	State, Class       string
	Rows               []orgRow
	Cursor, NextCursor uint64
	// NextURL, FirstURL and CSVURL keep the filter.
	NextURL, FirstURL, CSVURL string
	PageSize                  int
}

func sortedCounts(m map[string]int64) []classCount {
	out := make([]classCount, 0, len(m))
	for k, v := range m {
		if v > 0 {
			out = append(out, classCount{Class: k, Count: v})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Class < out[j].Class
	})
	return out
}

// filterOf reads the state and class of a query: one value each, empty
// for all.
func filterOf(q url.Values) (rollout.Filter, string, string, error) {
	var f rollout.Filter
	state, class := strings.TrimSpace(q.Get("state")), strings.TrimSpace(q.Get("class"))
	if state != "" {
		st, err := rollout.ParseState(state)
		if err != nil {
			return f, "", "", err
		}
		f.States = []ledger.State{st}
	}
	if class != "" {
		cl, err := rollout.ParseClass(class)
		if err != nil {
			return f, "", "", err
		}
		f.Classes = []string{cl}
	}
	return f, state, class, nil
}

func filterQuery(state, class string) url.Values {
	v := url.Values{}
	if state != "" {
		v.Set("state", state)
	}
	if class != "" {
		v.Set("class", class)
	}
	return v
}

func (c *Console) rollout(w http.ResponseWriter, r *http.Request, u *user) {
	id := r.PathValue("id")
	q := r.URL.Query()
	f, state, class, err := filterOf(q)
	if err != nil {
		c.fail(w, r, u, err)
		return
	}
	var cursor uint64
	if v := q.Get("cursor"); v != "" {
		if cursor, err = strconv.ParseUint(v, 10, 64); err != nil {
			c.errorPage(w, r, u, http.StatusBadRequest, fmt.Sprintf("cursor=%q: want the number a Next link gives", v))
			return
		}
	}
	ro, st, err := c.load(r.Context(), id)
	if err != nil {
		c.fail(w, r, u, err)
		return
	}
	recs, next, err := c.m.Ledger().Page(r.Context(), ro.ID, f, cursor, c.cfg.PageSize, 0)
	if err != nil {
		c.fail(w, r, u, err)
		return
	}
	majority := rollout.MajorityVersion(st.ByVersion)
	rows := make([]orgRow, len(recs))
	for i, rec := range recs {
		rows[i] = orgRow{Row: rollout.NewRow(rec, majority), Failed: rec.State == ledger.Failed}
	}
	slices.SortFunc(rows, func(a, b orgRow) int { return strings.Compare(a.OrgID, b.OrgID) })
	succ, failed := rollout.ClassSplit(st.ByClass)
	base := "/ui/rollouts/" + url.PathEscape(ro.ID)
	fq := filterQuery(state, class)
	d := rolloutData{
		S: st, Failed: sortedCounts(failed), Succeeded: sortedCounts(succ), Retrying: sortedCounts(st.RetryingByClass),
		States: []string{"succeeded", "failed", "pending", "cancelled"}, Classes: rollout.ClassNames(),
		State: state, Class: class, Rows: rows, Cursor: cursor, NextCursor: next, PageSize: c.cfg.PageSize,
		FirstURL: base + "?" + fq.Encode(), CSVURL: base + "/organisations.csv?" + fq.Encode(),
	}
	if next != 0 {
		nq := filterQuery(state, class)
		nq.Set("cursor", strconv.FormatUint(next, 10))
		d.NextURL = base + "?" + nq.Encode()
	}
	c.render(w, http.StatusOK, "rollout", view{Title: "Rollout " + ro.ID, User: u, Flash: flash(q), Data: d})
}

// flash is the sentence of an action's result, from the fixed codes the
// action handlers redirect with (never text from the query).
func flash(q url.Values) string {
	n, _ := strconv.Atoi(q.Get("n"))
	switch q.Get("done") {
	case "retry":
		return fmt.Sprintf("Retried %s: moved back to pending with a fresh task.", plural(int64(n), "organisation"))
	case "cancel":
		return fmt.Sprintf("Cancelled the rollout: %s marked cancelled.", plural(int64(n), "pending organisation"))
	case "promote":
		return fmt.Sprintf("Released wave %d.", n)
	case "pause":
		return "Paused the queue: no organisation of any rollout on it is imported until it is resumed."
	case "resume":
		return "Resumed the queue."
	}
	return ""
}

func (c *Console) statusJSON(w http.ResponseWriter, r *http.Request) {
	u := c.user(r)
	if u == nil {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "not signed in"})
		return
	}
	_, st, err := c.load(r.Context(), r.PathValue("id"))
	var ie *rollout.InputError
	switch {
	case errors.As(err, &ie):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": ie.Error()})
	case errors.Is(err, rollout.ErrNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "rollout not found"})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
	default:
		writeJSON(w, http.StatusOK, st)
	}
}

func (c *Console) csv(w http.ResponseWriter, r *http.Request, u *user) {
	id := r.PathValue("id")
	f, _, _, err := filterOf(r.URL.Query())
	if err != nil {
		c.fail(w, r, u, err)
		return
	}
	ro, counts, err := c.m.Get(r.Context(), id)
	if err != nil {
		c.fail(w, r, u, err)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+ro.ID+`-organisations.csv"`)
	rw, _ := rollout.NewRowWriter(w, rollout.FormatCSV)
	if _, err = c.m.Report(r.Context(), ro.ID, f, counts.ByVersion, rw.Write); err == nil {
		err = rw.Close()
	}
	if err != nil {
		c.log.Warn("console: CSV aborted", "rollout", ro.ID, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// confirmData is the confirmation page of an action: what it touches.
type confirmData struct {
	RolloutID, Action, Class, Queue string
	Question, Detail, Button        string
	Count                           int64
	Post, Back                      string
}

func (c *Console) confirm(w http.ResponseWriter, r *http.Request, u *user) {
	if !u.Operator() {
		c.errorPage(w, r, u, http.StatusForbidden, fmt.Sprintf("Token %s is a reader: actions need an operator token.", u.Entry.Name))
		return
	}
	_, st, err := c.load(r.Context(), r.PathValue("id"))
	if err != nil {
		c.fail(w, r, u, err)
		return
	}
	d := confirmData{RolloutID: st.RolloutID, Queue: st.Queue, Back: "/ui/rollouts/" + url.PathEscape(st.RolloutID)}
	d.Action = r.URL.Query().Get("action")
	d.Post = d.Back + "/" + d.Action
	switch d.Action {
	case "retry":
		d.Count = st.Failed
		scope := "failed"
		if cl := r.URL.Query().Get("class"); cl != "" {
			if d.Class, err = rollout.ParseClass(cl); err != nil {
				c.fail(w, r, u, err)
				return
			}
			_, failed := rollout.ClassSplit(st.ByClass)
			d.Count, scope = failed[d.Class], "failed ("+d.Class+")"
		}
		d.Question = fmt.Sprintf("Retry %s of rollout %s?", plural(d.Count, "organisation"), st.RolloutID)
		d.Detail = fmt.Sprintf("Every %s organisation goes back to pending and gets a fresh task on queue %s, with its full budget of attempts.", scope, st.Queue)
		d.Button = fmt.Sprintf("Retry %s", plural(d.Count, "organisation"))
	case "cancel":
		d.Count = st.Pending
		d.Question = fmt.Sprintf("Cancel rollout %s?", st.RolloutID)
		d.Detail = fmt.Sprintf("Its %s are marked cancelled and their tasks removed; imports in flight finish. This cannot be undone.", plural(st.Pending, "pending organisation"))
		d.Button = "Cancel rollout " + st.RolloutID
	case "promote":
		d.Question = fmt.Sprintf("Release wave %d of %d of rollout %s now?", st.Wave+1, st.Waves, st.RolloutID)
		d.Detail = "The current wave's bake and gate are skipped"
		if st.State == rollout.StateHalted {
			d.Detail += " and the halt is lifted (" + st.HaltReason + ")"
		}
		d.Detail += "."
		d.Button = fmt.Sprintf("Release wave %d", st.Wave+1)
	case "pause":
		d.Question = fmt.Sprintf("Pause queue %s?", st.Queue)
		d.Detail = fmt.Sprintf("Every rollout on queue %s stops until the queue is resumed, not only %s.", st.Queue, st.RolloutID)
		d.Button = "Pause queue " + st.Queue
	case "resume":
		d.Question = fmt.Sprintf("Resume queue %s?", st.Queue)
		d.Detail = fmt.Sprintf("The workers take tasks of every rollout on queue %s again.", st.Queue)
		d.Button = "Resume queue " + st.Queue
	default:
		c.errorPage(w, r, u, http.StatusBadRequest, fmt.Sprintf("action=%q: want retry, cancel, promote, pause or resume", d.Action))
		return
	}
	c.render(w, http.StatusOK, "confirm", view{Title: "Confirm", User: u, Data: d})
}

func (c *Console) done(w http.ResponseWriter, r *http.Request, id, what string, n int) {
	http.Redirect(w, r, "/ui/rollouts/"+url.PathEscape(id)+"?done="+what+"&n="+strconv.Itoa(n), http.StatusSeeOther)
}

func (c *Console) retry(w http.ResponseWriter, r *http.Request, u *user) {
	var classes []string
	if cl := strings.TrimSpace(r.PostFormValue("class")); cl != "" {
		classes = []string{cl}
	}
	res, err := c.m.Retry(r.Context(), r.PathValue("id"), classes)
	if err != nil {
		c.fail(w, r, u, err)
		return
	}
	c.log.Info("console: retry", "token", u.Entry.Name, "rollout", res.RolloutID, "classes", classes, "requeued", res.Requeued)
	c.done(w, r, res.RolloutID, "retry", res.Requeued)
}

func (c *Console) cancel(w http.ResponseWriter, r *http.Request, u *user) {
	res, err := c.m.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		c.fail(w, r, u, err)
		return
	}
	c.log.Info("console: cancel", "token", u.Entry.Name, "rollout", res.RolloutID, "cancelled", res.Cancelled)
	c.done(w, r, res.RolloutID, "cancel", res.Cancelled)
}

func (c *Console) promote(w http.ResponseWriter, r *http.Request, u *user) {
	st, err := c.m.Promote(r.Context(), r.PathValue("id"))
	if err != nil {
		c.fail(w, r, u, err)
		return
	}
	c.log.Info("console: promote", "token", u.Entry.Name, "rollout", st.RolloutID, "wave", st.Wave)
	c.done(w, r, st.RolloutID, "promote", st.Wave)
}

func (c *Console) pause(pause bool) pageFunc {
	return func(w http.ResponseWriter, r *http.Request, u *user) {
		ro, _, err := c.m.Get(r.Context(), r.PathValue("id"))
		if err != nil {
			c.fail(w, r, u, err)
			return
		}
		q := c.m.QueueOf(ro)
		if err := tasks.ValidateQueue(q); err != nil {
			c.fail(w, r, u, &rollout.InputError{Err: err})
			return
		}
		if _, err := c.m.SetPaused(q, pause); err != nil {
			c.fail(w, r, u, err)
			return
		}
		what := "resume"
		if pause {
			what = "pause"
		}
		c.log.Info("console: "+what+" queue", "token", u.Entry.Name, "queue", q)
		c.done(w, r, ro.ID, what, 0)
	}
}

func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return groupDigits(n) + " " + noun + "s"
}

// groupDigits writes n with thousands separators: 100,000.
func groupDigits(n int64) string { return message.NewPrinter(language.English).Sprint(n) }

func formatETA(eta *float64) string {
	if eta == nil || math.IsInf(*eta, 0) || math.IsNaN(*eta) {
		return "—"
	}
	if *eta == 0 {
		return "0s"
	}
	return (time.Duration(*eta) * time.Second).Round(time.Second).String()
}
