package gate

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

func m(v Verdict) Measurement {
	return Measurement{Verdict: v, Value: 0.01, Samples: 1, Reason: string(v), At: time.Unix(0, 0).UTC()}
}

func TestRun(t *testing.T) {
	spec := Spec{Query: "up", Condition: "== 1", Count: 3}
	cases := []struct {
		name  string
		count int
		add   []Verdict
		want  []Verdict // after each Add
	}{
		{"three passes", 3, []Verdict{Pass, Pass, Pass}, []Verdict{Pending, Pending, Pass}},
		{"fail at once", 3, []Verdict{Fail}, []Verdict{Fail}},
		{"fail after passes", 3, []Verdict{Pass, Pass, Fail}, []Verdict{Pending, Pending, Fail}},
		{"inconclusive after a pass", 3, []Verdict{Pass, Inconclusive}, []Verdict{Pending, Inconclusive}},
		{"decided stays decided", 3, []Verdict{Inconclusive, Pass, Pass, Pass}, []Verdict{Inconclusive, Inconclusive, Inconclusive, Inconclusive}},
		{"pass stays pass", 1, []Verdict{Pass, Fail}, []Verdict{Pass, Pass}},
		{"unknown verdict is inconclusive", 3, []Verdict{"", "maybe"}, []Verdict{Inconclusive, Inconclusive}},
		{"pending is inconclusive", 3, []Verdict{Pending}, []Verdict{Inconclusive}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := spec
			s.Count = tc.count
			r := NewRun(s)
			if r.Verdict != Pending || r.Decided() || r.Count != tc.count {
				t.Fatalf("NewRun = %+v", r)
			}
			taken := 0
			for i, v := range tc.add {
				was := r.Decided()
				if got := r.Add(m(v)); got != tc.want[i] {
					t.Fatalf("Add #%d (%s) = %s, want %s", i+1, v, got, tc.want[i])
				}
				if !was {
					taken++
				}
				if r.Done != taken {
					t.Fatalf("Done %d after %d measurements were taken into account", r.Done, taken)
				}
				if !was && r.Last.Verdict != v {
					t.Fatalf("Last %+v, want the measurement just added", r.Last)
				}
			}
		})
	}
}

func TestRunZeroValue(t *testing.T) {
	var r Run // Count 0: DefaultCount passes
	for i := 1; i < DefaultCount; i++ {
		if v := r.Add(m(Pass)); v != Pending {
			t.Fatalf("pass %d: %s", i, v)
		}
	}
	if v := r.Add(m(Pass)); v != Pass || r.Passes != DefaultCount {
		t.Fatalf("pass %d: %s, %+v", DefaultCount, v, r)
	}
	if NewRun(Spec{}).Count != DefaultCount {
		t.Fatal("NewRun of an unset Count")
	}
}

func TestRunJSON(t *testing.T) {
	r := NewRun(Spec{Count: 2})
	r.Add(m(Pass))
	r.Add(Measurement{Verdict: Inconclusive, Value: math.NaN(), Reason: "no data: the query returned an empty vector", At: time.Unix(1, 0).UTC()})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"count":2,"passes":1,"done":2,"verdict":"inconclusive","last":{"verdict":"inconclusive","value":"NaN","samples":0,"reason":"no data: the query returned an empty vector","at":"1970-01-01T00:00:01Z"}}`
	if string(b) != want {
		t.Fatalf("JSON\n%s\nwant\n%s", b, want)
	}
	var back Run
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Count != r.Count || back.Passes != r.Passes || back.Done != r.Done || back.Verdict != r.Verdict ||
		back.Last.Reason != r.Last.Reason || !math.IsNaN(back.Last.Value) || !back.Last.At.Equal(r.Last.At) {
		t.Fatalf("round trip %+v, want %+v", back, r)
	}
	if back.Add(m(Pass)) != Inconclusive {
		t.Fatal("a reloaded decided Run reopened")
	}
}
