package versoritest

import (
	"math"
	"time"
)

// Distribution is the shape of the fake's response latency.
type Distribution string

// The latency distributions.
const (
	// Constant: always Mean.
	Constant Distribution = "constant"
	// Uniform: Mean plus or minus up to Jitter.
	Uniform Distribution = "uniform"
	// Exponential: exponentially distributed with mean Mean (Jitter unused);
	// a long tail, like a loaded service.
	Exponential Distribution = "exponential"
	// Normal: normally distributed around Mean with standard deviation
	// Jitter.
	Normal Distribution = "normal"
)

// Latency is the delay the fake adds before answering any API request. The
// zero value adds none. Samples are never negative and never above Max when
// Max is set.
type Latency struct {
	Distribution Distribution
	Mean         time.Duration
	Jitter       time.Duration
	Max          time.Duration
}

func (l Latency) zero() bool { return l.Mean <= 0 && l.Jitter <= 0 }

// sample draws one delay; r supplies the randomness.
func (l Latency) sample(r randSource) time.Duration {
	var d float64
	mean := float64(l.Mean)
	switch l.Distribution {
	case Uniform:
		d = mean + (2*r.float64()-1)*float64(l.Jitter)
	case Exponential:
		d = r.expFloat64() * mean
	case Normal:
		d = mean + r.normFloat64()*float64(l.Jitter)
	default:
		d = mean
	}
	d = math.Max(d, 0)
	if l.Max > 0 {
		d = math.Min(d, float64(l.Max))
	}
	return time.Duration(d)
}
