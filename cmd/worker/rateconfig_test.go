package main

import (
	"strings"
	"testing"
	"time"
)

func TestRateSettingsDefaults(t *testing.T) {
	c, err := loadConfig(env(valid()), false)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Rate.Adaptive || !c.Rate.Breaker.Enabled || c.Rate.Floor != 0 || c.Rate.Key != "" {
		t.Fatalf("rate defaults: %+v (want adaptive, breaker on, floor and key from the budget's defaults)", c.Rate)
	}
	e := valid()
	e["IMPORT_RATE_ADAPTIVE"], e["BREAKER_ENABLED"] = "false", "0"
	e["IMPORT_RATE_FLOOR"], e["BREAKER_OPEN_INTERVAL"], e["BREAKER_MIN_CALLS"] = "0.5", "2s", "40"
	if c, err = loadConfig(env(e), false); err != nil {
		t.Fatal(err)
	}
	if c.Rate.Adaptive || c.Rate.Breaker.Enabled || c.Rate.Floor != 0.5 || c.Rate.Breaker.OpenInterval != 2*time.Second || c.Rate.Breaker.MinCalls != 40 {
		t.Fatalf("rate settings: %+v", c.Rate)
	}
}

// Each bad value of the adaptive rate's and the breaker's variables is
// named on its own line, as the other variables are.
func TestRateSettingsNameEveryBadVariable(t *testing.T) {
	for _, tc := range []struct {
		set  map[string]string
		want string
	}{
		{map[string]string{"IMPORT_RATE_ADAPTIVE": "maybe"}, "IMPORT_RATE_ADAPTIVE:"},
		{map[string]string{"IMPORT_RATE_FLOOR": "-1"}, "IMPORT_RATE_FLOOR:"},
		{map[string]string{"IMPORT_RATE_FLOOR": "11"}, "IMPORT_RATE_FLOOR:"}, // above the ceiling of 10
		{map[string]string{"IMPORT_RATE_FLOOR": "NaN"}, "IMPORT_RATE_FLOOR:"},
		{map[string]string{"IMPORT_RATE_LIMIT": "0", "IMPORT_RATE_FLOOR": "1"}, "IMPORT_RATE_FLOOR: is set, but IMPORT_RATE_LIMIT is 0"},
		{map[string]string{"IMPORT_RATE_KEY": "a b"}, "IMPORT_RATE_KEY:"},
		{map[string]string{"BREAKER_ENABLED": "sometimes"}, "BREAKER_ENABLED:"},
		{map[string]string{"BREAKER_MIN_CALLS": "1"}, "BREAKER_MIN_CALLS:"},
		{map[string]string{"BREAKER_FAILURE_RATIO": "1.5"}, "BREAKER_FAILURE_RATIO:"},
		{map[string]string{"BREAKER_FAILURE_RATIO": "0"}, "BREAKER_FAILURE_RATIO:"},
		{map[string]string{"BREAKER_WINDOW": "-1s"}, "BREAKER_WINDOW:"},
		{map[string]string{"BREAKER_OPEN_INTERVAL": "soon"}, "BREAKER_OPEN_INTERVAL:"},
		{map[string]string{"BREAKER_OPEN_INTERVAL": "10m", "BREAKER_MAX_OPEN_INTERVAL": "1m"}, "BREAKER_MAX_OPEN_INTERVAL:"},
	} {
		e := valid()
		for k, v := range tc.set {
			e[k] = v
		}
		_, err := loadConfig(env(e), false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to contain %q", tc.set, err, tc.want)
		}
		if err != nil && strings.Count(err.Error(), "\n") != 0 {
			t.Errorf("%v: %d lines, want one:\n%v", tc.set, strings.Count(err.Error(), "\n")+1, err)
		}
	}
}
