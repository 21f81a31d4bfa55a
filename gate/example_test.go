package gate_test

import (
	"context"
	"fmt"
	"time"

	"github.com/versori/import-worker/gate"
	"github.com/versori/import-worker/gate/gatetest"
)

// A gate that needs three passing measurements of the import error ratio.
// The fake Prometheus answers well twice, then has no data: the gate is
// inconclusive, and the rollout halts with that reason, rather than passing
// on two good measurements out of three.
func Example() {
	prom := gatetest.NewServer()
	defer prom.Close()

	spec := gate.Spec{
		Query:     `sum(rate(import_failures_total[5m])) / sum(rate(import_total[5m]))`,
		Condition: "< 0.05",
		Interval:  gate.Duration(time.Second),
	}.WithDefaults()
	if err := spec.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	m, err := gate.New(gate.Config{URL: prom.URL})
	if err != nil {
		fmt.Println(err)
		return
	}

	run := gate.NewRun(spec)
	answers := []func(){
		func() { prom.SetValue(0.01) },
		func() { prom.SetVector(0.02, 0.04) },
		func() { prom.SetNoData() },
	}
	for _, answer := range answers {
		answer()
		// A real caller waits spec.Interval between measurements.
		v := run.Add(m.Measure(context.Background(), spec))
		fmt.Printf("%s after %d: %s\n", v, run.Done, run.Last.Reason)
		if run.Decided() {
			break
		}
	}
	fmt.Println("queries:", prom.Queries())
	// Output:
	// pending after 1: 0.01 < 0.05
	// pending after 2: 0.04 < 0.05 (worst of 2 series)
	// inconclusive after 3: no data: the query returned an empty vector
	// queries: 3
}

// Validate names every problem of a spec at once, in one line.
func ExampleSpec_Validate() {
	err := gate.Spec{Query: "rate(x[5m])[1m:]", Condition: "=> 1", Count: 101}.WithDefaults().Validate()
	fmt.Println(err)
	// Output:
	// gate query "rate(x[5m])[1m:]": is a range vector; want an instant vector or a scalar (wrap it in a function such as rate() or avg_over_time()); gate condition "=> 1": want an operator (<, <=, >, >=, ==, !=) and a number; gate count 101: want 1 to 100
}

func ExampleParseCondition() {
	c, err := gate.ParseCondition(">=0.95")
	fmt.Println(c, err, c.Holds(0.97), c.Holds(0.9))
	// Output:
	// >= 0.95 <nil> true false
}
