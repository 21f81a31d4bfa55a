package rollout_test

import (
	"testing"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/rollout"
)

// One definition of pending and retrying: Waiting + Retrying = Pending,
// and the states add up to Total.
func TestBreakdown(t *testing.T) {
	c := ledger.Counts{Total: 10, Pending: 4, Retrying: 1, Succeeded: 3, Failed: 2, Cancelled: 1}
	b := rollout.BreakdownOf(c)
	if b.Waiting != 3 || b.Retrying != 1 || b.Pending != 4 || b.Done() {
		t.Fatalf("%+v", b)
	}
	if b.Waiting+b.Retrying+b.Succeeded+b.Failed+b.Cancelled != b.Total {
		t.Fatalf("states do not add up: %+v", b)
	}
	st := rollout.NewStatus(ledger.Rollout{ID: "r"}, c)
	if st.Pending != b.Pending || st.Retrying != b.Retrying || st.Done {
		t.Fatalf("status %+v", st)
	}
	if !rollout.BreakdownOf(ledger.Counts{Total: 2, Succeeded: 2}).Done() {
		t.Fatal("not done with nothing pending")
	}
}
