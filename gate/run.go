package gate

// Run is the progress of one gate across its measurements, kept by the
// caller between them (in Redis, as JSON) so that a worker restart resumes
// the gate where it was instead of starting its count again.
//
// Its rule is Argo's with one difference that matters: Count passes in a
// row pass the gate, and the first measurement that is not a pass decides
// it, Fail or Inconclusive alike, so an unmeasurable canary halts the
// rollout instead of being waved through or retried into a pass.
type Run struct {
	// Count is how many passes the gate needs; zero means DefaultCount.
	Count int `json:"count"`
	// Passes is how many measurements have passed.
	Passes int `json:"passes"`
	// Done is how many measurements have been added.
	Done int `json:"done"`
	// Verdict is Pending until the gate is decided, then Pass, Fail or
	// Inconclusive for good.
	Verdict Verdict `json:"verdict"`
	// Last is the latest measurement added; once the gate is decided its
	// Reason is the one to show (as halt_reason on Fail or Inconclusive).
	Last Measurement `json:"last"`
}

// NewRun starts a Run for s, taking its Count (or the default) so that the
// Run, once stored, does not depend on the Spec being at hand to decide.
func NewRun(s Spec) Run {
	return Run{Count: s.WithDefaults().Count, Verdict: Pending}
}

// Add records m and returns the gate's verdict so far: Pending while more
// passes are needed, Pass once Count have passed, Fail or Inconclusive as
// soon as one measurement is. A measurement whose verdict is anything but
// Pass or Fail (including the zero Measurement) counts as Inconclusive. Once
// the gate is decided, Add changes nothing and returns the same verdict, so
// a measurement that arrives late (a retried task) cannot reopen it.
func (r *Run) Add(m Measurement) Verdict {
	if r.Decided() {
		return r.Verdict
	}
	need := r.Count
	if need <= 0 {
		need = DefaultCount
	}
	r.Done++
	r.Last = m
	switch m.Verdict {
	case Pass:
		r.Passes++
		if r.Passes >= need {
			r.Verdict = Pass
		} else {
			r.Verdict = Pending
		}
	case Fail:
		r.Verdict = Fail
	default:
		r.Verdict = Inconclusive
	}
	return r.Verdict
}

// Decided reports whether the gate has its final verdict, so that a caller
// reloading a Run knows whether to measure again.
func (r Run) Decided() bool {
	return r.Verdict == Pass || r.Verdict == Fail || r.Verdict == Inconclusive
}
