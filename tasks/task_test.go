package tasks

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

const (
	testOrg       = "01HZY00000000000000000000A"
	testConnector = "01HZY00000000000000000000C"
)

func validPayload() Payload {
	return Payload{RolloutID: "r-1", OrgID: testOrg, ConnectorID: testConnector, Version: "1.2.0"}
}

func TestDecodePayload(t *testing.T) {
	good, _ := json.Marshal(validPayload())
	for _, tc := range []struct {
		name    string
		data    string
		wantErr string
	}{
		{"valid", string(good), ""},
		{"unknown fields tolerated", `{"rollout_id":"r-1","org_id":"` + testOrg + `","connector_id":"` + testConnector + `","version":"latest","extra":1}`, ""},
		{"not json", "import everything", "decode payload"},
		{"empty", "", "decode payload"},
		{"array", "[]", "decode payload"},
		{"missing org", `{"rollout_id":"r-1","connector_id":"` + testConnector + `","version":"1"}`, `missing field "org_id"`},
		{"missing version", `{"rollout_id":"r-1","org_id":"` + testOrg + `","connector_id":"` + testConnector + `"}`, `missing field "version"`},
		{"hostile org", `{"rollout_id":"r-1","org_id":"../../etc/passwd","connector_id":"` + testConnector + `","version":"1"}`, "organisation"},
		{"org with slash", `{"rollout_id":"r-1","org_id":"01HZY0000000000000000/000A","connector_id":"` + testConnector + `","version":"1"}`, "organisation"},
		{"bad rollout", `{"rollout_id":"r 1","org_id":"` + testOrg + `","connector_id":"` + testConnector + `","version":"1"}`, "rollout ID"},
		{"version traversal", `{"rollout_id":"r-1","org_id":"` + testOrg + `","connector_id":"` + testConnector + `","version":".."}`, "version"},
		{"trailing data", string(good) + `{}`, "trailing data"},
		{"oversized", `{"rollout_id":"` + strings.Repeat("a", MaxPayloadBytes) + `"}`, "at most"},
		{"wrong type", `{"rollout_id":1}`, "decode payload"},
		{"weight", withWeight("2.5"), ""},
		{"zero weight", withWeight("0"), ""},
		{"maximum weight", withWeight("1000"), ""},
		{"negative weight", withWeight("-1"), "invalid weight -1"},
		{"weight above the maximum", withWeight("1000.5"), "invalid weight 1000.5"},
		{"huge weight", withWeight("1e400"), "decode payload"},
		{"weight of the wrong type", withWeight(`"3"`), "decode payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodePayload([]byte(tc.data))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

// withWeight is a valid payload with the weight field set to the JSON w.
func withWeight(w string) string {
	return `{"rollout_id":"r-1","org_id":"` + testOrg + `","connector_id":"` + testConnector + `","version":"1","weight":` + w + `}`
}

func TestValidateWeight(t *testing.T) {
	for _, w := range []float64{0, 1, 0.001, 1e-9, 7.5, 1000} {
		if err := ValidateWeight(w); err != nil {
			t.Errorf("ValidateWeight(%v) = %v, want nil", w, err)
		}
	}
	for _, w := range []float64{-1, -1e-9, 1000.001, 1e9, math.NaN(), math.Inf(1), math.Inf(-1)} {
		err := ValidateWeight(w)
		if err == nil || !strings.Contains(err.Error(), "weight") {
			t.Errorf("ValidateWeight(%v) = %v, want an error naming the weight", w, err)
		}
		p := validPayload()
		p.Weight = w
		if _, err := NewImportTask(p, TaskOptions{}); err == nil || !strings.Contains(err.Error(), "weight") {
			t.Errorf("NewImportTask with weight %v = %v, want an error naming the weight", w, err)
		}
	}
}

func TestNewImportTask(t *testing.T) {
	task, err := NewImportTask(validPayload(), TaskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if task.Type() != TypeImport {
		t.Fatalf("type = %q", task.Type())
	}
	back, err := DecodePayload(task.Payload())
	if err != nil || back != validPayload() {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if strings.Contains(string(task.Payload()), "key") {
		t.Fatalf("payload mentions a key: %s", task.Payload())
	}
	weighted := validPayload()
	weighted.Weight = 2.5
	task, err = NewImportTask(weighted, TaskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if back, err := DecodePayload(task.Payload()); err != nil || back != weighted {
		t.Fatalf("round trip of a weighted payload: %+v, %v", back, err)
	}
	if strings.Contains(string(good(t)), "weight") {
		t.Errorf("a payload of weight 0 carries the field: %s", good(t))
	}
	bad := validPayload()
	bad.OrgID = "" // unset: the one OrgID that is not parsed
	if _, err := NewImportTask(bad, TaskOptions{}); err == nil {
		t.Fatal("invalid payload accepted")
	}
}

func TestValidateRolloutID(t *testing.T) {
	for id, ok := range map[string]bool{
		"r-1": true, "2026-11-27.connector_x": true, strings.Repeat("a", 64): true,
		"": false, "-r": false, "a b": false, "a/b": false, "a:b": false, strings.Repeat("a", 65): false, "é": false,
	} {
		if err := ValidateRolloutID(id); (err == nil) != ok {
			t.Errorf("ValidateRolloutID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestTaskIDIsPerRolloutAndOrg(t *testing.T) {
	first, again, other := TaskID("r1", testOrg), TaskID("r1", testOrg), TaskID("r2", testOrg)
	if first == other || first != again {
		t.Fatal("task IDs must be unique per rollout and organisation, and stable")
	}
}

// FuzzDecodePayload checks that no input crashes the decoder and that what
// it accepts is valid and survives a round trip.
func FuzzDecodePayload(f *testing.F) {
	good, _ := json.Marshal(validPayload())
	f.Add(good)
	f.Add([]byte(`{"rollout_id":"r","org_id":"x"}`))
	f.Add([]byte("\x00\xff"))
	f.Add([]byte(withWeight("2.5")))
	f.Add([]byte(withWeight("-0")))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodePayload(data)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted an invalid payload %+v: %v", p, err)
		}
		task, err := NewImportTask(p, TaskOptions{})
		if err != nil {
			t.Fatalf("accepted payload cannot become a task: %v", err)
		}
		if back, err := DecodePayload(task.Payload()); err != nil || back != p {
			t.Fatalf("round trip: %+v, %v", back, err)
		}
	})
}

func good(t *testing.T) []byte {
	t.Helper()
	data, err := json.Marshal(validPayload())
	if err != nil {
		t.Fatal(err)
	}
	return data
}
