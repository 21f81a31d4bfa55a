package bench

import (
	"slices"
	"sync"
	"time"
)

// Probe measures how noisy the host is while a figure runs: a goroutine
// sleeps for a fixed interval again and again and records how late it
// wakes. On an idle host it wakes within a fraction of a millisecond; when
// other processes hold the CPUs it wakes late by as much as they hold them,
// and so do the worker's handlers waiting for their rate-budget slots. A
// figure that misses its target is read together with its probe.
type Probe struct {
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	late     []time.Duration
}

// StartProbe starts a probe that sleeps interval at a time.
func StartProbe(interval time.Duration) *Probe {
	p := &Probe{interval: interval, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *Probe) run() {
	defer close(p.done)
	t := time.NewTimer(p.interval)
	defer t.Stop()
	for {
		want := time.Now().Add(p.interval)
		t.Reset(p.interval)
		select {
		case <-p.stop:
			return
		case <-t.C:
			// The time the goroutine runs, not the time on the channel
			// (when the runtime fired the timer): a handler is late by
			// the former.
			late := time.Since(want)
			p.mu.Lock()
			p.late = append(p.late, max(0, late))
			p.mu.Unlock()
		}
	}
}

// Lateness summarises how late a probe woke.
type Lateness struct {
	// Samples is the number of wake-ups.
	Samples int
	// P50, P99 and Max are quantiles of the lateness.
	P50, P99, Max time.Duration
	// Over20ms is the fraction of wake-ups later than 20 ms, the rate
	// budget's default LateTolerance: a handler that late drops its slot.
	Over20ms float64
}

// Stop stops the probe and summarises what it saw.
func (p *Probe) Stop() Lateness {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return Summarise(p.late)
}

// Summarise computes the quantiles of lateness samples.
func Summarise(late []time.Duration) Lateness {
	if len(late) == 0 {
		return Lateness{}
	}
	s := slices.Clone(late)
	slices.Sort(s)
	q := func(f float64) time.Duration { return s[int(f*float64(len(s)-1))] }
	over := 0
	for _, d := range s {
		if d > 20*time.Millisecond {
			over++
		}
	}
	return Lateness{Samples: len(s), P50: q(0.5), P99: q(0.99), Max: s[len(s)-1], Over20ms: float64(over) / float64(len(s))}
}

// String formats the summary for a log line.
func (l Lateness) String() string {
	return "timer lateness p50 " + l.P50.Round(10*time.Microsecond).String() + ", p99 " + l.P99.Round(10*time.Microsecond).String() +
		", max " + l.Max.Round(time.Millisecond).String() + ", " + formatPercent(l.Over20ms) + " over 20 ms"
}

func formatPercent(f float64) string {
	return fmtFloat(100*f, 2) + "%"
}
