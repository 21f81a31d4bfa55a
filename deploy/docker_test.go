package deploy_test

import (
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dockerfile is the part of deploy/Dockerfile the tests read.
type dockerfile struct {
	stages []stage
}

type stage struct {
	from         string
	instructions []string // "RUN ...", "USER ...", continuation lines joined
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	var d dockerfile
	var cont string
	for _, line := range strings.Split(string(readFile(t, "Dockerfile")), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cont += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		line, cont = cont+line, ""
		if strings.HasPrefix(line, "FROM ") {
			d.stages = append(d.stages, stage{from: strings.Fields(line)[1]})
			continue
		}
		if len(d.stages) == 0 {
			continue // ARG before the first FROM
		}
		s := &d.stages[len(d.stages)-1]
		s.instructions = append(s.instructions, line)
	}
	return d
}

func (s stage) all(keyword string) []string {
	var out []string
	for _, in := range s.instructions {
		if rest, ok := strings.CutPrefix(in, keyword+" "); ok {
			out = append(out, strings.TrimSpace(rest))
		}
	}
	return out
}

// TestDockerfileShape checks the image's properties: multi-stage, a final
// stage without a shell or package manager, a non-root user, an exec-form
// entrypoint (there is no shell to run a string one).
func TestDockerfileShape(t *testing.T) {
	d := parseDockerfile(t)
	if len(d.stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", len(d.stages))
	}
	final := d.stages[len(d.stages)-1]
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") && final.from != "scratch" {
		t.Errorf("runtime stage is FROM %s, want distroless/static or scratch", final.from)
	}
	if runs := final.all("RUN"); len(runs) > 0 {
		t.Errorf("runtime stage runs %q; it has no shell", runs)
	}
	users := final.all("USER")
	if len(users) == 0 {
		t.Error("runtime stage sets no USER")
	} else if u := strings.Split(users[len(users)-1], ":")[0]; u == "0" || u == "root" || u == "" {
		t.Errorf("runtime stage runs as %q", users[len(users)-1])
	}
	eps := final.all("ENTRYPOINT")
	var argv []string
	if len(eps) != 1 || json.Unmarshal([]byte(eps[0]), &argv) != nil || len(argv) == 0 {
		t.Errorf("ENTRYPOINT %q is not in exec form", eps)
	} else if argv[0] != "/usr/local/bin/worker" {
		t.Errorf("ENTRYPOINT runs %s, want the worker", argv[0])
	}
}

// goBuild is the go build command of the Dockerfile's build stage.
type goBuild struct {
	env      []string
	flags    []string
	packages []string
}

// dockerGoBuild finds the build stage's go build and splits it into the
// environment, the flags (with build arguments substituted) and the
// packages.
func dockerGoBuild(t *testing.T, args map[string]string) goBuild {
	t.Helper()
	build := parseDockerfile(t).stages[0]
	var cmd string
	for _, r := range build.all("RUN") {
		if strings.Contains(r, "go build") {
			cmd = r
		}
	}
	if cmd == "" {
		t.Fatal("no go build in the Dockerfile's first stage")
	}
	cmd = regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(cmd, func(v string) string {
		return args[v[2:len(v)-1]]
	})
	words := shellWords(t, cmd)
	var g goBuild
	i := 0
	for ; i < len(words) && strings.Contains(words[i], "="); i++ {
		g.env = append(g.env, words[i])
	}
	if i+2 > len(words) || words[i] != "go" || words[i+1] != "build" {
		t.Fatalf("cannot read %q as ENV=... go build ...", cmd)
	}
	for i += 2; i < len(words); i++ {
		switch w := words[i]; {
		case w == "-o" || w == "-ldflags" || w == "-tags":
			g.flags = append(g.flags, w, words[i+1])
			i++
		case strings.HasPrefix(w, "-"):
			g.flags = append(g.flags, w)
		default:
			g.packages = append(g.packages, w)
		}
	}
	return g
}

// shellWords splits a command line on blanks, honouring double quotes (all
// the Dockerfile uses).
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, inWord = !inQuote, true
		case (r == ' ' || r == '\t') && !inQuote:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inQuote {
		t.Fatalf("unbalanced quotes in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// isStatic reports whether the ELF file at path needs no dynamic loader and
// no shared library.
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return false, nil
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return false, err
	}
	return len(libs) == 0, nil
}

// TestDockerBuildStatic runs the Dockerfile's go build (its environment,
// flags and packages; the output directory moved to a temporary one) and
// checks that every binary is static, so it runs on distroless/static.
func TestDockerBuildStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries")
	}
	g := dockerGoBuild(t, map[string]string{"VERSION": "v9.9.9-test", "COMMIT": "c0ffee"})
	if !slices.Contains(g.env, "CGO_ENABLED=0") {
		t.Errorf("go build runs without CGO_ENABLED=0: %v", g.env)
	}
	if !slices.Contains(g.flags, "-trimpath") {
		t.Error("go build runs without -trimpath")
	}
	for _, want := range []string{"./cmd/worker", "./cmd/enqueue", "./cmd/fakeapi"} {
		if !slices.Contains(g.packages, want) {
			t.Errorf("the image does not build %s", want)
		}
	}
	out, pkgs := builtBinaries(t)
	for _, p := range pkgs {
		bin := filepath.Join(out, filepath.Base(p))
		static, err := isStatic(bin)
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		if !static {
			t.Errorf("%s is dynamically linked", bin)
		}
	}
	// The linker flags stamp the version the build info metric reports.
	if slices.Contains(pkgs, "./cmd/worker") {
		b, err := exec.Command(filepath.Join(out, "worker"), "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(b), "v9.9.9-test") {
			t.Errorf("worker --version = %q, %v; want the stamped v9.9.9-test", b, err)
		}
	}
}

// TestIsStaticDetectsDynamic keeps the static check honest on a binary
// that is known to be dynamic.
func TestIsStaticDetectsDynamic(t *testing.T) {
	for _, p := range []string{"/bin/ls", "/usr/bin/env"} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		static, err := isStatic(p)
		if err != nil {
			t.Fatal(err)
		}
		if static {
			t.Errorf("%s reported static", p)
		}
		return
	}
	t.Skip("no dynamic system binary to check against")
}
