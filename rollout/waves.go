package rollout

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/versori/import-worker/ratebudget"
)

// WaveSize is one entry of a --waves list: the cumulative size of a wave,
// a count of organisations or a percentage of the list.
type WaveSize struct {
	// Count is the number of organisations released once the wave is,
	// counted from the start of the list; 0 when Percent is set.
	Count int
	// Percent is the share of the list in (0, 100]; 0 when Count is set.
	Percent float64
}

// String gives the entry as written: "10" or "10%".
func (w WaveSize) String() string {
	if w.Percent > 0 {
		return strconv.FormatFloat(w.Percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(w.Count)
}

// MaxWaves bounds the number of waves of a rollout.
const MaxWaves = 100

// ParseWaves parses a --waves list: comma-separated cumulative sizes, each
// a count or a percentage of the list, strictly increasing; a final 100% is
// added when missing. "10,10%,100%" is the first 10 organisations, then up
// to 10% of the list, then the rest. Errors name the entry at fault.
func ParseWaves(s string) ([]WaveSize, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("waves: empty list (want comma-separated counts or percentages, e.g. 10,10%,100%)")
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxWaves {
		return nil, fmt.Errorf("waves: %d waves, at most %d", len(parts), MaxWaves)
	}
	out := make([]WaveSize, 0, len(parts)+1)
	for i, p := range parts {
		p = strings.TrimSpace(p)
		w, err := parseWaveSize(p)
		if err != nil {
			return nil, fmt.Errorf("waves: wave %d %q: %w", i+1, truncate(p, 40), err)
		}
		if i > 0 {
			prev := out[i-1]
			if prev.Percent == 100 {
				return nil, fmt.Errorf("waves: wave %d %q comes after 100%%, which already is the whole list", i+1, p)
			}
			// Entries of one kind compare as given; a count and a
			// percentage only against the list (Resolve).
			if (w.Percent > 0) == (prev.Percent > 0) && !w.above(prev) {
				return nil, fmt.Errorf("waves: wave %d %q is not above wave %d %q: sizes are cumulative and strictly increasing", i+1, p, i, prev)
			}
		}
		out = append(out, w)
	}
	if last := out[len(out)-1]; last.Percent != 100 {
		out = append(out, WaveSize{Percent: 100})
	}
	return out, nil
}

func (w WaveSize) above(prev WaveSize) bool {
	if w.Percent > 0 {
		return w.Percent > prev.Percent
	}
	return w.Count > prev.Count
}

func parseWaveSize(p string) (WaveSize, error) {
	if p == "" {
		return WaveSize{}, errors.New("empty entry")
	}
	if num, ok := strings.CutSuffix(p, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		switch {
		case err != nil || math.IsNaN(v) || math.IsInf(v, 0):
			return WaveSize{}, errors.New("not a percentage (want e.g. 10%)")
		case v <= 0:
			return WaveSize{}, errors.New("a wave must hold at least one organisation (above 0%)")
		case v > 100:
			return WaveSize{}, errors.New("above 100% of the list")
		}
		return WaveSize{Percent: v}, nil
	}
	n, err := strconv.Atoi(p)
	switch {
	case err != nil:
		return WaveSize{}, errors.New("not a count or a percentage (want e.g. 10 or 10%)")
	case n <= 0:
		return WaveSize{}, errors.New("a wave must hold at least one organisation (above 0)")
	}
	return WaveSize{Count: n}, nil
}

// ResolveWaves turns parsed waves into cumulative organisation counts for a
// list of n: a percentage rounds down, to at least one organisation. The
// last bound is always n. A percentage that rounds to the bound before it
// is dropped (1% and 2% of 50 are both one organisation); a count above n
// or a bound below the one before it is an error.
func ResolveWaves(waves []WaveSize, n int) ([]int, error) {
	if n <= 0 {
		return nil, errors.New("waves: the list is empty")
	}
	bounds := make([]int, 0, len(waves))
	for i, w := range waves {
		b := w.Count
		if w.Percent > 0 {
			b = max(1, int(math.Floor(w.Percent*float64(n)/100+1e-9)))
		} else if b > n {
			return nil, fmt.Errorf("waves: wave %d (%d organisations) is above the list's %d", i+1, b, n)
		}
		prev := 0
		if len(bounds) > 0 {
			prev = bounds[len(bounds)-1]
		}
		switch {
		case b == prev && (w.Percent > 0 || i == len(waves)-1):
			continue
		case b <= prev:
			return nil, fmt.Errorf("waves: wave %d (%s = %d organisations of %d) is not above wave %d (%d)", i+1, w, b, n, len(bounds), prev)
		}
		bounds = append(bounds, b)
	}
	return bounds, nil
}

// Defaults of a rollout's waves.
const (
	// DefaultMaxFailureRatio is the failed share of a wave's finished
	// organisations above which the rollout halts.
	DefaultMaxFailureRatio = 0.05
	// DefaultWeight is a rollout's share of the fleet's rate.
	DefaultWeight = 1.0
	// MaxWeight bounds a rollout's weight (the budget's fair turn caps it
	// there too).
	MaxWeight = ratebudget.MaxFlowWeight
	// MaxBake bounds the bake time between waves.
	MaxBake = 7 * 24 * time.Hour
)

// ParseRatio parses a --max-failure-ratio: a number in [0, 1].
func ParseRatio(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) {
		return 0, fmt.Errorf("max failure ratio %q: not a number (want a ratio in [0, 1], e.g. 0.05)", truncate(s, 40))
	}
	return v, CheckRatio(v)
}

// CheckRatio refuses a failure ratio outside [0, 1].
func CheckRatio(v float64) error {
	if math.IsNaN(v) || v < 0 || v > 1 {
		return fmt.Errorf("max failure ratio %v outside [0, 1]", v)
	}
	return nil
}

// CheckBake refuses a negative bake time or one above MaxBake.
func CheckBake(d time.Duration) error {
	if d < 0 || d > MaxBake {
		return fmt.Errorf("bake %v outside [0s, %v]", d, MaxBake)
	}
	return nil
}

// CheckWeight refuses a weight that is not a positive finite number up to
// MaxWeight.
func CheckWeight(w float64) error {
	if math.IsNaN(w) || math.IsInf(w, 0) || w <= 0 || w > MaxWeight {
		return fmt.Errorf("weight %v outside (0, %v]", w, MaxWeight)
	}
	return nil
}
