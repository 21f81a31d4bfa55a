package versoritest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

// BenchmarkImport measures the fake's throughput through the real client:
// every call imports into a new organisation, over a pooled client, with as
// many goroutines as a worker fleet would use. It reports calls/s so a
// benchmark of the worker can tell whether the fake could be its
// bottleneck.
func BenchmarkImport(b *testing.B) {
	s := versoritest.NewServer()
	defer s.Close()
	cfg := s.ClientConfig()
	cfg.MaxConnsPerHost = 64
	c, err := versori.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	orgs := make([]string, b.N+64)
	for i := range orgs {
		orgs[i] = newID()
	}
	var next atomic.Int64
	var failed atomic.Int64
	b.SetParallelism(16) // 16 x GOMAXPROCS goroutines
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			org := orgs[next.Add(1)-1]
			if _, err := c.ImportPublicConnectorVersion(ctx, versori.OrgID(org), versori.ConnectorID(connector), "1.0.0"); err != nil {
				failed.Add(1)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
	if failed.Load() > 0 {
		b.Fatalf("%d calls failed", failed.Load())
	}
	if s.Imports() != b.N {
		b.Fatalf("imports %d, calls %d", s.Imports(), b.N)
	}
}

// BenchmarkHandler measures the fake's handler alone, without sockets: the
// ceiling the fake puts on a benchmark, whatever the transport costs.
func BenchmarkHandler(b *testing.B) {
	s := versoritest.NewUnstartedServer(versoritest.WithAPIKey("k"))
	orgs := make([]string, b.N+64)
	for i := range orgs {
		orgs[i] = newID()
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			org := orgs[next.Add(1)-1]
			req := httptest.NewRequest(http.MethodPost, "/api/connect/v1/o/"+org+"/connectors/"+connector+"/versions/1.0.0/library/import", nil)
			req.Header.Set("Authorization", "Bearer k")
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Errorf("status %d", rec.Code)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}
