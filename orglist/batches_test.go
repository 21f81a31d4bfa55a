package orglist

import (
	"slices"
	"strings"
	"testing"

	"github.com/versori/import-worker/versori"
)

func TestParseIDsAndBatches(t *testing.T) {
	ids := []string{"01hzy3k8w0v6q1b2c3d4e5f6g1", "01HZY3K8W0V6Q1B2C3D4E5F6G2", "01HZY3K8W0V6Q1B2C3D4E5F6G3", "nope", "01HZY3K8W0V6Q1B2C3D4E5F6G4"}
	parsed, err := ParseIDs(slices.Values(ids))
	var got [][]versori.OrgID
	for b := range Batches(parsed, 2) {
		got = append(got, slices.Clone(b))
	}
	want := [][]versori.OrgID{{"01HZY3K8W0V6Q1B2C3D4E5F6G1", "01HZY3K8W0V6Q1B2C3D4E5F6G2"}, {"01HZY3K8W0V6Q1B2C3D4E5F6G3"}}
	if !slices.EqualFunc(got, want, slices.Equal[[]versori.OrgID]) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	if *err == nil || !strings.Contains((*err).Error(), "nope") {
		t.Fatalf("error %v, want one naming the invalid ID", *err)
	}
	parsed, err = ParseIDs(slices.Values(ids[:3]))
	n := 0
	for b := range Batches(parsed, 10) {
		n += len(b)
	}
	if n != 3 || *err != nil {
		t.Fatalf("%d IDs, %v", n, *err)
	}
}
