package tasks

import "testing"

// BenchmarkDecodePayload is the cost every task pays before its ledger
// read (figure 2 of BENCHMARKS.md profiles the rest).
func BenchmarkDecodePayload(b *testing.B) {
	data := []byte(`{"rollout_id":"rollout-2026-12-02","org_id":"01HZY00000000000000000000A","connector_id":"01HZY00000000000000000000C","version":"1.2.0"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodePayload(data); err != nil {
			b.Fatal(err)
		}
	}
}
