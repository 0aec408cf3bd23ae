// bmbuild compiles a command from its source on first use and runs it.
//
// It is the interpreter of the stub scripts in /ubin: a stub holds one line,
// "#!/run/bm/bin/bmbuild /src/cmds/<name>", so the kernel runs
// "bmbuild /src/cmds/<name> /ubin/<name> args...". The first call builds the
// command into /run/bm/cache/bin (tmpfs) under a flock, so two shells calling
// a new command at once build it once; later calls exec the binary at once.
// A first call runs the compiler and the linker directly when the image holds
// an exact build plan for the command (plan.go), else `go build`. A source
// file newer than the binary, in the command's folder or in a package of its
// module it imports, makes the next call rebuild it (fresh.go).
//
// "bmbuild -prebuild" builds every stubbed command that is not built yet,
// smallest source first (init starts it at nice 19 when the kernel command
// line says bm.prebuild=1).
//
// "bmbuild -warmup" builds a throwaway program once (init starts it at nice 19
// after boot unless bm.warmup=0). The first build of a boot costs seconds more
// than the next ones (measured under TCG: 4.3-4.7 s against 1.3-1.8 s): the
// emulator translates the go command's, the compiler's and the linker's code
// the first time it runs, and files come from the disk. Done in the
// background, a person's first command pays only its own build.
//
// Environment: BMBUILD_VERBOSE=1 reports each build and its time on stderr;
// BMBUILD_LDFLAGS overrides the linker flags (default "-s -w": no symbol
// table and no DWARF, which the linker would otherwise spend time writing);
// BMBUILD_DELAY=<seconds> sleeps before each build, to show that a latency
// gate fails on a slowed build; BMBUILD_PLAN=0 always uses `go build`;
// BMBUILD_GOGC sets the tools' GOGC on the plan's path (default 400).
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	state      = "/run/bm"
	stubs      = "/ubin"
	defaultLD  = "-s -w"
	stubPrefix = "#!" + state + "/bin/bmbuild "
)

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bmbuild: "+format+"\n", args...)
	os.Exit(code)
}

func goEnv() []string {
	arch := "linux_" + runtime.GOARCH
	return append(os.Environ(),
		"GOROOT=/go", "GOCACHE="+state+"/gocache", "GOPATH="+state+"/gopath", "HOME="+state,
		"CGO_ENABLED=0", "GOFLAGS=-trimpath", "GOTOOLCHAIN=local",
		"PATH=/"+arch+"/bin:"+os.Getenv("PATH"))
}

// build makes binary from source: through the command's plan when the image has an exact one, else with
// `go build`; then records what the binary was built from.
func build(source, binary string) error {
	if delay, err := strconv.ParseFloat(os.Getenv("BMBUILD_DELAY"), 64); err == nil {
		time.Sleep(time.Duration(delay * float64(time.Second)))
	}
	started := time.Now()
	temporary := binary + ".tmp"
	how, planned, err := buildWithPlan(source, binary, temporary)
	if !planned {
		how = "go build: " + how
		if err := goBuild(source, temporary); err != nil {
			return err
		}
		err = scanDeps(source).write(binary)
	}
	if err != nil {
		return err
	}
	if err := os.Rename(temporary, binary); err != nil {
		return err
	}
	if os.Getenv("BMBUILD_VERBOSE") != "" {
		fmt.Fprintf(os.Stderr, "bmbuild: built %s in %.2f s (%s)\n", filepath.Base(source), time.Since(started).Seconds(), how)
	}
	return nil
}

// buildWithPlan builds through the plan when there is an exact one: ("plan", true, error of recording
// the deps), or (why not, false, nil).
func buildWithPlan(source, binary, temporary string) (string, bool, error) {
	if os.Getenv("BMBUILD_PLAN") == "0" {
		return "BMBUILD_PLAN=0", false, nil
	}
	if ldflags, set := os.LookupEnv("BMBUILD_LDFLAGS"); set && ldflags != defaultLD {
		return "BMBUILD_LDFLAGS differs from the plan's", false, nil
	}
	checking := time.Now()
	p, err := readPlan(planFile(source))
	if os.IsNotExist(err) {
		return "no plan", false, nil
	}
	if err != nil {
		return err.Error(), false, nil
	}
	if why := p.stale(source, filepath.Join(state, "cache/work", filepath.Base(source))); why != "" {
		return "plan stale: " + why, false, nil
	}
	checked := fmt.Sprintf("check %.3f s", time.Since(checking).Seconds())
	steps, err := p.run(temporary)
	if err != nil {
		return fmt.Sprintf("the plan failed (%v)", err), false, nil
	}
	return "plan: " + strings.Join(append([]string{checked}, steps...), ", "), true, p.deps().write(binary)
}

func goBuild(source, temporary string) error {
	ldflags, set := os.LookupEnv("BMBUILD_LDFLAGS")
	if !set {
		ldflags = defaultLD
	}
	// By absolute path: exec.Command looks the name up in our own PATH, not in cmd.Env's.
	cmd := exec.Command("/linux_"+runtime.GOARCH+"/bin/go", "build", "-buildvcs=false", "-ldflags="+ldflags,
		"-o", temporary, ".")
	cmd.Dir = source
	cmd.Env = goEnv()
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("could not build %s: %v", source, err)
	}
	return nil
}

// ensure builds the command of source into the tmpfs cache unless an up-to-date binary is there.
func ensure(source string) (string, error) {
	name := filepath.Base(source)
	for _, dir := range []string{state + "/cache/bin", state + "/cache/lock"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
	}
	binary := filepath.Join(state, "cache/bin", name)
	if !stale(source, binary) {
		return binary, nil
	}
	lock, err := os.OpenFile(filepath.Join(state, "cache/lock", name), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("flock: %v", err)
	}
	if stale(source, binary) { // someone else may have built it while we waited
		return binary, build(source, binary)
	}
	return binary, nil
}

// sourceSize is the bytes of Go source in dir: the pre-build's proxy for build time.
func sourceSize(dir string) int64 {
	var total int64
	entries, _ := os.ReadDir(dir)
	for _, entry := range entries {
		if info, err := entry.Info(); err == nil && strings.HasSuffix(entry.Name(), ".go") {
			total += info.Size()
		}
	}
	return total
}

func prebuild() {
	entries, err := os.ReadDir(stubs)
	if err != nil {
		fail(2, "%v", err)
	}
	var sources []string
	for _, entry := range entries {
		head, err := os.ReadFile(filepath.Join(stubs, entry.Name()))
		if err == nil && strings.HasPrefix(string(head), stubPrefix) {
			sources = append(sources, strings.TrimSpace(strings.TrimPrefix(string(head), stubPrefix)))
		}
	}
	sort.SliceStable(sources, func(i, j int) bool { return sourceSize(sources[i]) < sourceSize(sources[j]) })
	started := time.Now()
	for _, source := range sources {
		if _, err := ensure(source); err != nil {
			fmt.Fprintf(os.Stderr, "bmbuild: %v\n", err)
		}
	}
	fmt.Printf("bmbuild: prebuild of %d commands done in %.2f s\n", len(sources), time.Since(started).Seconds())
}

const warmupProgram = `package main

import (
	"fmt"
	"os"
)

func main() { fmt.Fprintln(os.Stderr, "warm") }
`

// warmup builds warmupProgram in /run/bm/warmup; it leaves nothing of the commands in the cache.
func warmup() {
	dir := state + "/warmup"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fail(2, "%v", err)
	}
	for name, text := range map[string]string{"go.mod": "module warmup\n\ngo 1.24\n", "main.go": warmupProgram} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			fail(2, "%v", err)
		}
	}
	started := time.Now()
	if err := build(dir, filepath.Join(dir, "warm")); err != nil {
		fail(2, "warm-up: %v", err)
	}
	fmt.Printf("bmbuild: warm-up build done in %.2f s\n", time.Since(started).Seconds())
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-prebuild" {
		prebuild()
		return
	}
	if len(os.Args) == 2 && os.Args[1] == "-warmup" {
		warmup()
		return
	}
	if len(os.Args) < 3 {
		fail(64, "usage: bmbuild <source dir> <stub> [args...] (normally run through a stub's #! line) | bmbuild -prebuild")
	}
	source, stub := os.Args[1], os.Args[2]
	binary, err := ensure(source)
	if err != nil {
		fail(2, "%v", err)
	}
	argv := append([]string{filepath.Base(stub)}, os.Args[3:]...)
	if err := syscall.Exec(binary, argv, os.Environ()); err != nil {
		fail(2, "exec %s: %v", binary, err)
	}
}
