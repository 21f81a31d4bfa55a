package versoritest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// AdminHandler serves the fake's control endpoints, for tests that run the
// fake as a separate process (cmd/fakeapi). It has no authentication: serve
// it on loopback only.
//
//	GET  /_health                        200 "ok"
//	GET  /_stats                         Stats as JSON
//	GET  /_calls?org=ID                  {"calls","imports","conflicts"} of one organisation
//	POST /_reset                         Reset
//	POST /_outage?on=true|false          SetOutage
//	POST /_unauthorized?on=true|false    SetUnauthorized
//	POST /_fault?org=ID&kind=K[&n=N][&status=S][&retry_after=V][&delay=D][&size=B]
//	                                     FailNext when n > 0, else SetFault;
//	                                     org empty means any; kind empty clears
//	POST /_fault_rates?KIND=P&...         SetFaultRates (no parameters clears)
//	POST /_rate_limit?per_second=R&burst=B[&observe=true][&omit_retry_after=true][&headers=none|ietf|x]
//	POST /_rate_limit_schedule?steps=R@OFFSET,...[&burst=B][&observe=true][&omit_retry_after=true][&headers=STYLE]
//	                                     SetRateLimitSchedule from now (see
//	                                     ParseRateLimitSchedule); no steps ends it
//	POST /_latency?mean=D[&jitter=D][&distribution=NAME][&max=D]
func (s *Server) AdminHandler() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /_health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	m.HandleFunc("GET /_stats", func(w http.ResponseWriter, r *http.Request) {
		adminJSON(w, s.Stats())
	})
	m.HandleFunc("GET /_calls", func(w http.ResponseWriter, r *http.Request) {
		org := r.URL.Query().Get("org")
		adminJSON(w, map[string]int{"calls": s.Calls(org), "imports": s.ImportsOf(org), "conflicts": s.ConflictsOf(org)})
	})
	m.HandleFunc("POST /_reset", func(w http.ResponseWriter, r *http.Request) {
		s.Reset()
		adminJSON(w, map[string]bool{"ok": true})
	})
	m.HandleFunc("POST /_outage", adminSwitch(s.SetOutage))
	m.HandleFunc("POST /_unauthorized", adminSwitch(s.SetUnauthorized))
	m.HandleFunc("POST /_fault", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := Fault{Kind: FaultKind(q.Get("kind")), RetryAfter: q.Get("retry_after"), Code: q.Get("code"), Message: q.Get("message")}
		var err error
		n := 0
		if f.Kind != "" && !f.Kind.Valid() {
			err = fmt.Errorf("unknown fault kind %q", f.Kind)
		}
		err = firstErr(err, intParam(q.Get("n"), &n), intParam(q.Get("status"), &f.Status),
			durationParam(q.Get("delay"), &f.Delay), int64Param(q.Get("size"), &f.Size))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if n > 0 {
			s.FailNext(q.Get("org"), n, f)
		} else {
			s.SetFault(q.Get("org"), f)
		}
		adminJSON(w, map[string]bool{"ok": true})
	})
	m.HandleFunc("POST /_fault_rates", func(w http.ResponseWriter, r *http.Request) {
		rates := map[FaultKind]float64{}
		for k, v := range r.URL.Query() {
			p, err := strconv.ParseFloat(v[0], 64)
			if err != nil {
				http.Error(w, fmt.Sprintf("rate for %s: %v", k, err), http.StatusBadRequest)
				return
			}
			rates[FaultKind(k)] = p
		}
		if err := s.SetFaultRates(rates); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		adminJSON(w, map[string]bool{"ok": true})
	})
	m.HandleFunc("POST /_rate_limit", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		p, err := rateLimitParams(q)
		if v := q.Get("per_second"); v != "" && err == nil {
			p.PerSecond, err = strconv.ParseFloat(v, 64)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.SetRateLimitPolicy(p)
		adminJSON(w, map[string]bool{"ok": true})
	})
	m.HandleFunc("POST /_rate_limit_schedule", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		base, err := rateLimitParams(q)
		var steps []RateLimitStep
		if spec := q.Get("steps"); spec != "" && err == nil {
			steps, err = ParseRateLimitSchedule(spec, base)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.SetRateLimitSchedule(steps)
		adminJSON(w, map[string]any{"ok": true, "steps": len(steps)})
	})
	m.HandleFunc("POST /_latency", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		l := Latency{Distribution: Distribution(q.Get("distribution"))}
		if err := firstErr(durationParam(q.Get("mean"), &l.Mean), durationParam(q.Get("jitter"), &l.Jitter), durationParam(q.Get("max"), &l.Max)); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.SetLatency(l)
		adminJSON(w, map[string]bool{"ok": true})
	})
	return m
}

// rateLimitParams reads the policy settings other than the rate.
func rateLimitParams(q url.Values) (RateLimit, error) {
	var p RateLimit
	var err error
	p.Headers, err = ParseHeaderStyle(q.Get("headers"))
	err = firstErr(err, intParam(q.Get("burst"), &p.Burst),
		boolParam(q.Get("observe"), &p.ObserveOnly), boolParam(q.Get("omit_retry_after"), &p.OmitRetryAfter))
	return p, err
}

func boolParam(v string, dst *bool) error {
	if v == "" {
		return nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("%q is not true or false", v)
	}
	*dst = b
	return nil
}

func adminSwitch(set func(bool)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		on, err := strconv.ParseBool(r.URL.Query().Get("on"))
		if err != nil {
			http.Error(w, "on must be true or false", http.StatusBadRequest)
			return
		}
		set(on)
		adminJSON(w, map[string]bool{"ok": true})
	}
}

func adminJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func intParam(v string, dst *int) error {
	if v == "" {
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("%q is not an integer", v)
	}
	*dst = n
	return nil
}

func int64Param(v string, dst *int64) error {
	if v == "" {
		return nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not an integer", v)
	}
	*dst = n
	return nil
}

func durationParam(v string, dst *time.Duration) error {
	if v == "" {
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return err
	}
	*dst = d
	return nil
}
