// bmbuild compiles a command from its source on first use and runs it.
//
// It is the interpreter of the stub scripts in /ubin: a stub holds one line,
// "#!/run/bm/bin/bmbuild /src/cmds/<name>", so the kernel runs
// "bmbuild /src/cmds/<name> /ubin/<name> args...". The first call builds the
// command into /run/bm/cache/bin (tmpfs) under a flock, so two shells calling
// a new command at once build it once; later calls exec the binary at once.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

const state = "/run/bm"

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

func build(source, binary string) {
	started := time.Now()
	temporary := binary + ".tmp"
	// By absolute path: exec.Command looks the name up in our own PATH, not in cmd.Env's.
	cmd := exec.Command("/linux_"+runtime.GOARCH+"/bin/go", "build", "-o", temporary, ".")
	cmd.Dir = source
	cmd.Env = goEnv()
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		fail(2, "could not build %s: %v", source, err)
	}
	if err := os.Rename(temporary, binary); err != nil {
		fail(2, "%v", err)
	}
	if os.Getenv("BMBUILD_VERBOSE") != "" {
		fmt.Fprintf(os.Stderr, "bmbuild: built %s in %.2f s\n", filepath.Base(source), time.Since(started).Seconds())
	}
}

func main() {
	if len(os.Args) < 3 {
		fail(64, "usage: bmbuild <source dir> <stub> [args...] (normally run through a stub's #! line)")
	}
	source, stub := os.Args[1], os.Args[2]
	name := filepath.Base(source)
	for _, dir := range []string{state + "/cache/bin", state + "/cache/lock"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fail(2, "%v", err)
		}
	}
	binary := filepath.Join(state, "cache/bin", name)
	if _, err := os.Stat(binary); err != nil {
		lock, err := os.OpenFile(filepath.Join(state, "cache/lock", name), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			fail(2, "%v", err)
		}
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			fail(2, "flock: %v", err)
		}
		if _, err := os.Stat(binary); err != nil { // someone else may have built it while we waited
			build(source, binary)
		}
		lock.Close()
	}
	argv := append([]string{filepath.Base(stub)}, os.Args[3:]...)
	if err := syscall.Exec(binary, argv, os.Environ()); err != nil {
		fail(2, "exec %s: %v", binary, err)
	}
}
