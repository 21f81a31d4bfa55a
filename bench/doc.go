// Package bench measures how close the import worker gets to its limits,
// each figure side by side with a baseline run in the same process on the
// same machine (these machines are noisy: absolute times drift by 30%
// between runs, ratios within one run much less):
//
//  1. rate fidelity: three workers sharing R = 200 calls/s, against the
//     per-process golang.org/x/time/rate recipe from asynq's wiki;
//  2. overhead: the full pipeline against a bare asynq server making the
//     same HTTP call, and Redis commands per organisation for both;
//  3. rollout efficiency under 5% 503s and 2% 429s: wall time / (N/R);
//  4. recovery after a 30-second outage of the API;
//  5. enqueue: the operator CLI against asynq's Client.Enqueue one at a time;
//  6. footprint: peak RSS and goroutines at rest of the worker;
//  7. adaptive rate and circuit breaker (issue 15): a real limit below the
//     ceiling, a limit that changes, scattered 429s and 503s, an outage,
//     rate-limit headers and the budget's Redis cost, each beside the
//     fixed schedule (IMPORT_RATE_ADAPTIVE=false, BREAKER_ENABLED=false);
//     the fleets of one group run side by side, each on its own Redis and
//     fake API;
//  8. the HTTP API (issue 10): creating 100,000 organisations through
//     cmd/api with an NDJSON body against the enqueue CLI, the API's peak
//     RSS, status latency and the report stream's time and memory.
//
// The figures run as subtests of TestBench, which is skipped unless BENCH=1
// (so `make test` stays fast); `make bench` runs them all and prints one
// table, `make bench FIGURE=rate` one of them (FIGURE=adaptive for figure 7,
// FIGURE=adaptive/outage for one of its groups, FIGURE=api for figure 8).
// BENCHMARKS.md at the repository root holds the table of a full run and
// notes per figure.
//
// This package holds the measuring and reporting code; the figures
// themselves are in bench_test.go (figure 7 in adaptive_test.go, figure 8 in
// api_test.go), and the baseline worker in cmd/baselineworker.
package bench
