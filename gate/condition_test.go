package gate

import (
	"math"
	"strings"
	"testing"
)

func TestParseCondition(t *testing.T) {
	good := []struct {
		in   string
		want Condition
		str  string
	}{
		{"< 0.05", Condition{LT, 0.05}, "< 0.05"},
		{"<0.05", Condition{LT, 0.05}, "< 0.05"},
		{"  <=  1  ", Condition{LE, 1}, "<= 1"},
		{">= 0.95", Condition{GE, 0.95}, ">= 0.95"},
		{"> -3", Condition{GT, -3}, "> -3"},
		{"== 0", Condition{EQ, 0}, "== 0"},
		{"!=0", Condition{NE, 0}, "!= 0"},
		{"<\t.5", Condition{LT, 0.5}, "< 0.5"},
		{"< 5.", Condition{LT, 5}, "< 5"},
		{"< 1e3", Condition{LT, 1000}, "< 1000"},
		{"< +2.5E-1", Condition{LT, 0.25}, "< 0.25"},
		{"< 1e21", Condition{LT, 1e21}, "< 1e+21"},
		{"< 1e-400", Condition{LT, 0}, "< 0"},
	}
	for _, tc := range good {
		c, err := ParseCondition(tc.in)
		if err != nil {
			t.Errorf("ParseCondition(%q): %v", tc.in, err)
			continue
		}
		if c != tc.want {
			t.Errorf("ParseCondition(%q) = %+v, want %+v", tc.in, c, tc.want)
		}
		if got := c.String(); got != tc.str {
			t.Errorf("ParseCondition(%q).String() = %q, want %q", tc.in, got, tc.str)
		}
	}

	bad := []struct{ in, wantErr string }{
		{"=> 1", `gate condition "=> 1": want an operator (<, <=, >, >=, ==, !=) and a number`},
		{"", `gate condition "": want an operator`},
		{"0.05", `want an operator`},
		{"= 1", `want an operator`},
		{"<", `want an operator`},
		{"<< 1", `want an operator`},
		{"< 1 2", `want an operator`},
		{"< 0.05%", `want an operator`},
		{"< Inf", `want an operator`},
		{"< NaN", `want an operator`},
		{"< 0x10", `want an operator`},
		{"< 1_000", `want an operator`},
		{"< .", `want an operator`},
		{"< 1e", `want an operator`},
		{"< 1e400", `gate condition "< 1e400": the number is too large: want a finite number`},
		{"< -1e400", `too large`},
		{"lt 1", `want an operator`},
		{"< " + strings.Repeat("9", 500), `too large`},
	}
	for _, tc := range bad {
		_, err := ParseCondition(tc.in)
		if err == nil {
			t.Errorf("ParseCondition(%q) succeeded, want an error", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("ParseCondition(%q) = %q, want it to contain %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestParseConditionEchoIsBounded(t *testing.T) {
	_, err := ParseCondition("?" + strings.Repeat("x", 10000))
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("error %q: want one shorter than 200 bytes", err)
	}
}

func TestHolds(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	cases := []struct {
		cond string
		v    float64
		want bool
	}{
		{"< 0.05", 0.01, true}, {"< 0.05", 0.05, false}, {"< 0.05", 0.5, false},
		{"<= 0.05", 0.05, true}, {"<= 0.05", 0.06, false},
		{"> 1", 2, true}, {"> 1", 1, false},
		{">= 0.95", 0.95, true}, {">= 0.95", 0.9, false},
		{"== 0", 0, true}, {"== 0", math.Copysign(0, -1), true}, {"== 0", 1e-9, false},
		{"!= 0", 1, true}, {"!= 0", 0, false},
		{"< 1", inf, false}, {"> 1", inf, true}, {"< 1", -inf, true},
		// NaN holds for nothing, not even !=.
		{"< 1", nan, false}, {"> 1", nan, false}, {"== 0", nan, false}, {"!= 0", nan, false},
	}
	for _, tc := range cases {
		c, err := ParseCondition(tc.cond)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Holds(tc.v); got != tc.want {
			t.Errorf("%q.Holds(%v) = %v, want %v", tc.cond, tc.v, got, tc.want)
		}
	}
	if (Condition{}).Holds(0) || (Condition{Op: "~", Threshold: 0}).Holds(0) {
		t.Error("a Condition with no known operator holds; want it to hold for nothing")
	}
}

func FuzzParseCondition(f *testing.F) {
	for _, s := range []string{"< 0.05", ">=0.95", "== 0", "!= -1e-3", "=> 1", "<", "", "< 1e400", "<= 1e-400", "> .5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCondition(s)
		if err != nil {
			if len(err.Error()) > 200 {
				t.Fatalf("error of %d bytes: %q", len(err.Error()), err)
			}
			return
		}
		if math.IsNaN(c.Threshold) || math.IsInf(c.Threshold, 0) {
			t.Fatalf("ParseCondition(%q) = %+v: threshold not finite", s, c)
		}
		back, err := ParseCondition(c.String())
		if err != nil {
			t.Fatalf("ParseCondition(%q).String() = %q does not parse: %v", s, c.String(), err)
		}
		if back != c || back.String() != c.String() {
			t.Fatalf("ParseCondition(%q) = %+v, its String %q parses to %+v", s, c, c.String(), back)
		}
		_ = c.Holds(0)
	})
}
