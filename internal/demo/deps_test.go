package demo_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProductionBinariesLinkNoDemo checks that the production binaries
// link neither the in-memory Redis nor the fake API: the demo is built only
// with -tags demo (make demo).
func TestProductionBinariesLinkNoDemo(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../../cmd/worker", "../../cmd/enqueue", "../../cmd/api").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps listed only %d packages", len(deps))
	}
	for _, d := range deps {
		if strings.Contains(d, "github.com/alicebob/miniredis") || strings.Contains(d, "versoritest") || strings.Contains(d, "internal/demo") {
			t.Errorf("a production binary links %s", d)
		}
	}
	// The check must see what it exists for: the demo build does link them.
	out, err = exec.Command("go", "list", "-deps", "-tags", "demo", "../../cmd/worker").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "github.com/alicebob/miniredis/v2\n") {
		t.Fatalf("the demo build does not link miniredis: %v", err)
	}
}
