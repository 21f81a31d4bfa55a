package apitoken

import (
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tok, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, Prefix) || len(tok) < 40 {
		t.Fatalf("token %q", tok)
	}
	file := "# tokens\n\n" + Line(Operator, tok, "ci") + "\n" + Line(Reader, "other", "") + "\n"
	es, err := Parse(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	s := NewSet(es)
	e, ok := s.Lookup(tok)
	if !ok || e.Role != Operator || e.Name != "ci" {
		t.Fatalf("lookup: %+v %v", e, ok)
	}
	if e, ok := s.Lookup("other"); !ok || e.Role != Reader || e.Name != "line-4" {
		t.Fatalf("lookup other: %+v %v", e, ok)
	}
	if _, ok := s.Lookup(tok + "x"); ok {
		t.Fatal("wrong token accepted")
	}
	if _, ok := s.Lookup(""); ok {
		t.Fatal("empty token accepted")
	}
}

func TestParseBad(t *testing.T) {
	for _, in := range []string{
		"admin " + Hash("x"),
		"operator " + strings.ToUpper(Hash("x")),
		"operator vit_plaintoken",
		"operator",
		"operator " + Hash("x") + " bad/name",
		"operator " + Hash("x") + " a b",
	} {
		if _, err := Parse(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("Parse(%q) = %v, want an error naming line 1", in, err)
		}
	}
}
