package taskstest_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/tasks/taskstest"
	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

// A user's test runs the real handler against the fake Versori API and an
// in-memory ledger, one delivery at a time: a 503 on the first attempt is
// retried, the second attempt imports, and a delivery after that makes no
// call.
func ExampleRun() {
	api := versoritest.NewServer()
	defer api.Close()
	client, err := versori.New(api.ClientConfig())
	if err != nil {
		panic(err)
	}
	led := taskstest.NewLedger()
	h, err := tasks.NewHandler(tasks.HandlerConfig{
		Client:  client,
		Ledger:  led,
		Metrics: metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{}),
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}

	p := tasks.Payload{RolloutID: "salesforce-2026-11", OrgID: "01HZY00000000000000000000A", ConnectorID: "01HZY0000000000000000C0NN0", Version: "latest"}
	api.FailNext(string(p.OrgID), 1, versoritest.Fault{Kind: versoritest.FaultServerError, Status: 503})

	ctx := context.Background()
	for retried := range 3 {
		res, err := taskstest.Run(ctx, h, p, taskstest.WithAttempt(retried, 3))
		if err != nil {
			panic(err)
		}
		rec, _ := led.Record(p.RolloutID, p.OrgID)
		fmt.Printf("delivery %d: %s; record %s (%s) after %d calls, API calls %d\n",
			retried+1, res.Kind, rec.State, rec.Class, rec.Attempts, api.Calls(string(p.OrgID)))
	}
	// Output:
	// delivery 1: retry; record pending (server_error) after 1 calls, API calls 1
	// delivery 2: done; record succeeded (imported) after 2 calls, API calls 2
	// delivery 3: done; record succeeded (imported) after 2 calls, API calls 2
}
