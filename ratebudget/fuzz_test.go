package ratebudget

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// FuzzSchedule drives one budget through a sequence of bookings, cool-downs
// and advances of the Redis clock, and checks what the script booked
// against what GCRA promises:
//   - any j-i+1 consecutive slots span at least (j-i-(Burst-1)) intervals,
//     i.e. no window holds more than Burst + its length in intervals;
//   - nothing is booked before the end of a cool-down begun earlier;
//   - a booked slot lies within MaxWait, a refused one beyond it.
func FuzzSchedule(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 2, 3, 0, 0, 0, 0, 6, 0, 0, 0, 0})
	f.Add([]byte{2, 3, 0, 0, 43, 0, 0, 0, 255, 0, 1, 0, 0})
	f.Add([]byte{3, 0, 1, 0, 4, 0, 8, 0, 12, 0, 1, 0, 2, 1, 3})

	m := miniredis.RunT(f)
	c := client(f, m.Addr())
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) < 3 || len(ops) > 200 {
			return
		}
		limit := []float64{1, 3, 10, 200}[ops[0]%4]
		burst := min(int(ops[1]%4)+1, MaxBurst(limit))
		maxWait := time.Duration(ops[2]%8+1) * 250 * time.Millisecond
		m.FlushAll()
		now := t0
		m.SetTime(now)
		b := mustNew(t, c, Config{Limit: limit, Burst: burst, MaxWait: maxWait, MaxCoolDown: 3 * time.Second})
		interval := time.Duration(float64(time.Second) / limit)
		ctx := context.Background()

		// Delays are whole µs and TAT is held to 0.25 µs, while the clock
		// here moves in ns: both checks allow for that rounding.
		const slack = 2 * time.Microsecond
		var slots []time.Time
		var coolEnd time.Time
		for _, op := range ops[3:] {
			arg := time.Duration(op >> 2)
			switch op % 4 {
			case 0, 1:
				r, err := b.Reserve(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if r.Booked != (r.Delay <= maxWait) || r.Delay < 0 {
					t.Fatalf("booked %v with delay %v, MaxWait %v", r.Booked, r.Delay, maxWait)
				}
				if !r.Booked {
					continue
				}
				slot := now.Add(r.Delay)
				if slot.Before(coolEnd.Add(-slack)) {
					t.Fatalf("slot %v before the end of the cool-down %v", slot.Sub(t0), coolEnd.Sub(t0))
				}
				slots = append(slots, slot)
			case 2:
				now = now.Add(arg * interval / 4)
				m.SetTime(now)
			case 3:
				d := arg * 10 * time.Millisecond
				if err := b.CoolDown(ctx, d); err != nil {
					t.Fatal(err)
				}
				if end := now.Add(min(d, 3*time.Second)); d > 0 && end.After(coolEnd) {
					coolEnd = end
				}
			}
		}
		for i := range slots {
			for j := i + 1; j < len(slots); j++ {
				min := time.Duration(j-i-(burst-1)) * interval
				if got := slots[j].Sub(slots[i]); got < min-slack {
					t.Fatalf("slots %d..%d span %v, want at least %v (limit %v, burst %d)", i, j, got, min, limit, burst)
				}
			}
		}
	})
}
