// Package gate decides, from a Prometheus measurement, whether a rollout may
// release its next canary wave, in the manner of an Argo Rollouts
// AnalysisTemplate: a PromQL instant query, a condition its result must
// satisfy, and how many measurements, how far apart, must pass in a row.
//
// The package only measures and counts; the wave advancer owns the loop. It
// validates a [Spec] when the rollout is created (so a typo is a 4xx, not a
// halted rollout an hour later), builds one [Measurer] per process, and for
// each gate keeps a [Run] in Redis, feeding it one [Measurement] every
// Spec.Interval until [Run.Add] returns something other than [Pending]:
//
//	spec = spec.WithDefaults()
//	if err := spec.Validate(); err != nil { ... reject the rollout ... }
//	run := gate.NewRun(spec)
//	for {
//		switch run.Add(measurer.Measure(ctx, spec)) {
//		case gate.Pass:
//			return release() // the next wave
//		case gate.Fail, gate.Inconclusive:
//			return halt(run.Last.Reason) // as halt_reason
//		}
//		// wait spec.Interval, then measure again
//	}
//
// The one rule that matters most: a measurement that could not be taken or
// read (no data, NaN, an error, a timeout, an unreachable server) is
// [Inconclusive], and an inconclusive measurement never counts as a pass. A
// gate that passes when Prometheus is down is no gate (compare
// argoproj/argo-rollouts#1466 and #1905).
//
// Package gatetest provides a fake Prometheus to test callers against.
package gate
