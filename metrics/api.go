package metrics

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Names of the HTTP API's metrics (cmd/api): RED per route pattern, method
// and status code. The route is the pattern the request matched
// ("POST /v1/rollouts", "GET /v1/rollouts/{id}") or "unmatched", never a
// path, so the labels stay bounded.
const (
	NameAPIRequests        = Namespace + "_api_requests_total"
	NameAPIRequestDuration = Namespace + "_api_request_duration_seconds"
)

// API holds the HTTP API's metrics.
type API struct {
	// Requests counts requests by route, method and code (the status code
	// as three digits).
	Requests *prometheus.CounterVec
	// Duration observes the time to the end of the answer, by route and
	// method; for a streamed report, the whole stream.
	Duration *prometheus.HistogramVec
}

// NewAPI registers the API's RED metrics on reg.
func NewAPI(reg prometheus.Registerer) *API {
	a := &API{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameAPIRequests,
			Help: "HTTP API requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    NameAPIRequestDuration,
			Help:    "HTTP API request duration by route pattern and method, to the end of the answer.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "method"}),
	}
	reg.MustRegister(a.Requests, a.Duration)
	return a
}

// RegisterProcess registers the build info metric and the Go and process
// collectors, for a binary that does not call New (cmd/api).
func RegisterProcess(reg prometheus.Registerer, b BuildInfo) {
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        NameBuildInfo,
		Help:        "Always 1; labels carry the version and commit of the running binary.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}
