// init is PID 1 of the mostly-source image, run from the VFAT root by the first-stage initramfs
// (images/guest/stage1.sh) as /linux_<goarch>/bin/init.
//
// It mounts the kernel file systems and two tmpfs (/run, /tmp), links /run/bm/bin to this arch's
// prebuilt programs (the one arch-neutral path the /ubin stubs name), makes this arch's warm Go build
// cache writable on tmpfs (the root is read-only), prints the readiness marker,
// optionally starts the background pre-build, and keeps a shell on the console, reaping orphans.
//
// Kernel parameters: bm.gocache=link|copy (how the warm cache reaches tmpfs), bm.warmup=0 (no warm-up
// build after the marker), bm.prebuild=1 (build every command in the background).
package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"bootmatrix.local/guest/internal/files"
	"bootmatrix.local/guest/internal/utsname"
)

const state = "/run/bm"

var arch = "linux_" + runtime.GOARCH

func say(format string, args ...any) {
	fmt.Printf("bootmatrix: "+format+"\n", args...)
}

func mount(source, target, fstype string, flags uintptr, data string) {
	if err := os.MkdirAll(target, 0o755); err != nil {
		say("mkdir %s: %v", target, err)
	}
	err := syscall.Mount(source, target, fstype, flags, data)
	if err != nil && !errors.Is(err, syscall.EBUSY) { // EBUSY: the first stage moved it here already
		say("mount %s on %s: %v", fstype, target, err)
	}
}

// mirrorTree makes target a tree of the directories of source, and calls place(file, destination) for
// each file in it.
func mirrorTree(source, target string, place func(file, destination string) error) error {
	return filepath.WalkDir(source, func(path string, entry fs.DirEntry, walkErr error) error {
		if walkErr != nil {
			return walkErr
		}
		destination := filepath.Join(target, strings.TrimPrefix(path, source))
		if entry.IsDir() {
			return os.MkdirAll(destination, 0o755)
		}
		return place(path, destination)
	})
}

// warmCache makes this arch's warm Go build cache writable on tmpfs: by default as links to the files
// on the root (bm.gocache=link), or as copies (bm.gocache=copy), which cost seconds and memory at boot.
func warmCache(mode string) {
	started := time.Now()
	cache, source := state+"/gocache", "/gocache/"+arch
	var count int
	var bytes int64
	err := mirrorTree(source, cache, func(file, destination string) error {
		count++
		if mode == "copy" {
			// Times are not kept: the copies are "used" now, so Go's cache trimming keeps them.
			n, err := files.Copy(file, destination, 0o644)
			bytes += n
			return err
		}
		// A link: Go reads cache entries through it and writes new entries beside it; its "mark used"
		// time update, which the read-only root refuses, is an error Go ignores.
		return os.Symlink(file, destination)
	})
	if mode != "copy" {
		mode = "link"
	}
	if err != nil {
		say("preparing the warm Go cache failed, builds start cold: %v", err)
		return
	}
	// The image's trim stamp is fixed (so the image is bit-identical); stamp it now, or the first build
	// would scan the whole cache for entries to trim.
	_ = os.Remove(cache + "/trim.txt")
	stamp := fmt.Sprintf("%d", time.Now().Unix())
	if err := os.WriteFile(cache+"/trim.txt", []byte(stamp), 0o666); err != nil {
		say("trim.txt: %v", err)
	}
	say("warm Go cache (%s): %d files, %.1f MB copied, in %.2f s", mode, count, float64(bytes)/1e6,
		time.Since(started).Seconds())
}

// parameter is the value of name=value on the kernel command line, or "".
func parameter(cmdline, name string) string {
	for _, field := range strings.Fields(cmdline) {
		if value, found := strings.CutPrefix(field, name+"="); found {
			return value
		}
	}
	return ""
}

// consoleTTY is the device behind /dev/console (the last one the kernel lists), so that the shell
// gets a real controlling terminal and job control works; /dev/console itself cannot be one.
func consoleTTY() string {
	active, err := os.ReadFile("/sys/class/tty/console/active")
	fields := strings.Fields(string(active))
	if err != nil || len(fields) == 0 {
		return "/dev/console"
	}
	return "/dev/" + fields[len(fields)-1]
}

var environment = []string{
	"PATH=/ubin:" + state + "/bin", "HOME=/tmp", "PS1=bootmatrix# ", "TERM=vt100",
}

func startShell() (int, error) {
	tty, err := os.OpenFile(consoleTTY(), os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer tty.Close()
	shell := exec.Command("/"+arch+"/bin/sh", "-i")
	shell.Stdin, shell.Stdout, shell.Stderr = tty, tty, tty
	shell.Env = environment
	shell.Dir = "/tmp"
	shell.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := shell.Start(); err != nil {
		return 0, err
	}
	return shell.Process.Pid, nil
}

// startBuilder runs bmbuild in the background at the lowest priority (the shell and what the user
// runs come first), its output in /run/bm/<mode>.log.
func startBuilder(mode, what string) {
	logPath := state + "/" + strings.TrimPrefix(mode, "-") + ".log"
	log, err := os.Create(logPath)
	if err != nil {
		say("%s: %v", what, err)
		return
	}
	defer log.Close()
	builder := exec.Command("/"+arch+"/bin/bmbuild", mode)
	builder.Stdout, builder.Stderr, builder.Env = log, log, environment
	if err := builder.Start(); err != nil {
		say("%s: %v", what, err)
		return
	}
	_ = syscall.Setpriority(syscall.PRIO_PROCESS, builder.Process.Pid, 19)
	say("%s started (pid %d, nice 19, log %s)", what, builder.Process.Pid, logPath)
}

func main() {
	mount("proc", "/proc", "proc", 0, "")
	mount("sysfs", "/sys", "sysfs", 0, "")
	mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	mount("tmpfs", "/run", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0755")
	mount("tmpfs", "/tmp", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=1777")
	if err := os.MkdirAll(state, 0o755); err != nil {
		say("%v", err)
	}
	if err := os.Symlink("/"+arch+"/bin", state+"/bin"); err != nil {
		say("%v", err)
	}
	raw, _ := os.ReadFile("/proc/cmdline")
	cmdline := string(raw)
	warmCache(parameter(cmdline, "bm.gocache"))
	// Only emergency kernel messages reach the console from here on, so command output is not
	// interleaved with kernel chatter; a panic still shows.
	_ = os.WriteFile("/proc/sys/kernel/printk", []byte("1"), 0o644)
	names, _ := utsname.Get()
	uptime, _ := os.ReadFile("/proc/uptime")
	// Started before the marker, so their logs exist once the shell answers.
	switch {
	case parameter(cmdline, "bm.prebuild") == "1":
		startBuilder("-prebuild", "background pre-build") // it warms up too
	case parameter(cmdline, "bm.warmup") != "0":
		startBuilder("-warmup", "warm-up build")
	}
	fmt.Printf("BOOTMATRIX-READY arch=%s kernel=%s uptime=%s image=gosource\n", names.Machine, names.Release,
		strings.Fields(string(uptime) + " ?")[0])
	shell, err := startShell()
	if err != nil {
		say("cannot start the shell: %v", err)
	}
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, 0, nil)
		if errors.Is(err, syscall.ECHILD) {
			time.Sleep(time.Second)
		}
		if pid == shell || err != nil && shell == 0 {
			say("console shell exited; starting another")
			time.Sleep(100 * time.Millisecond)
			if shell, err = startShell(); err != nil {
				say("cannot start the shell: %v", err)
			}
		}
	}
}
