package tinyboot

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// request is a power request: what the machine does once the application has stopped.
type request struct {
	poweroff bool
	source   string
}

func (r request) action() string {
	if r.poweroff {
		return "power off"
	}
	return "reboot"
}

// supervise is PID 1: set the machine up, run the application as a child, turn power requests into its
// stop, and end the machine the way the request (or the child's own end) says. It never returns.
func supervise() {
	start := time.Now()
	setup()
	Logf("machine ready in %.2f s; starting the app", time.Since(start).Seconds())

	requests := make(chan request, 8)
	go watchPowerButtons(requests)

	exited := make(chan syscall.WaitStatus, 1)
	child, err := startChild()
	if err != nil {
		Logf("cannot start the app: %v; rebooting", err)
		finish(request{poweroff: false, source: "start failure"})
	}
	watchSignals(requests, child.Pid, exited)

	var asked *request
	var kill <-chan time.Time
	for {
		select {
		case r := <-requests:
			if asked != nil {
				continue // one stop at a time; the first request decides
			}
			asked = &r
			Logf("%s: stopping the app, then %s", r.source, r.action())
			if err := child.Signal(syscall.SIGTERM); err != nil {
				Logf("signalling the app: %v", err)
			}
			kill = time.After(StopGrace)
		case <-kill:
			Logf("the app did not stop within %s: killing it", StopGrace)
			_ = child.Kill()
		case status := <-exited:
			if asked != nil {
				Logf("app stopped (%s); %s", describeExit(status), asked.action())
				finish(*asked)
			}
			Logf("app ended on its own (%s): rebooting", describeExit(status))
			finish(request{poweroff: false, source: "app exit"})
		}
	}
}

// startChild runs this binary again as the application. PID 1 reaps every child itself (reapChildren),
// so the process is never Wait-ed on through os.
func startChild() (*os.Process, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return os.StartProcess(self, os.Args, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
}

func describeExit(status syscall.WaitStatus) string {
	switch {
	case status.Signaled():
		return "killed by " + status.Signal().String()
	case status.ExitStatus() == panicStatus:
		return "exit status 2: the app panicked"
	}
	return fmt.Sprintf("exit status %d", status.ExitStatus())
}

// watchSignals turns the signals init gets into requests (busybox's conventions, which the kernel's
// orderly_poweroff and orderly_reboot reach through /sbin/poweroff and /sbin/reboot; Ctrl-Alt-Del),
// and reaps every child on SIGCHLD: the app's end goes to `exited`, orphans it left are just collected.
func watchSignals(requests chan<- request, app int, exited chan<- syscall.WaitStatus) {
	// Ctrl-Alt-Del becomes SIGINT to init instead of an immediate reboot by the kernel.
	_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_CAD_OFF)
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	go func() {
		for sig := range signals {
			switch sig {
			case syscall.SIGUSR1, syscall.SIGUSR2:
				requests <- request{poweroff: true, source: "signal " + sig.String()}
			case syscall.SIGTERM, syscall.SIGINT:
				requests <- request{poweroff: false, source: "signal " + sig.String()}
			}
			reapChildren(app, exited) // signals coalesce: look on every one
		}
	}()
	reapChildren(app, exited) // an app that died before Notify
}

func reapChildren(app int, exited chan<- syscall.WaitStatus) {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err != nil || pid <= 0 {
			return
		}
		if pid == app {
			exited <- status
		}
	}
}

// finish ends the machine: everything written reaches the disks, the file systems are unmounted, and
// the kernel powers off or restarts. It never returns.
func finish(r request) {
	// Said first: what the console has not sent when the kernel powers off is lost.
	Logf("%s: syncing and unmounting", r.action())
	drainConsole()
	syscall.Sync()
	for _, target := range []string{Persistent, ISO} {
		if err := syscall.Unmount(target, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
			Logf("unmount %s: %v", target, err)
		}
	}
	syscall.Sync()
	command := syscall.LINUX_REBOOT_CMD_RESTART
	if r.poweroff {
		command = syscall.LINUX_REBOOT_CMD_POWER_OFF
	}
	drainConsole()
	if err := syscall.Reboot(command); err != nil {
		Logf("reboot(2): %v", err)
	}
	select {} // the kernel ends the machine; PID 1 must not exit meanwhile
}

// drainConsole waits until the console has sent what the app and PID 1 wrote (tcdrain: TCSBRK with a
// non-zero argument): the kernel restarts without flushing the serial port, and a panic's report would
// be cut off.
func drainConsole() {
	const tcsbrk = 0x5409 // the same on amd64, arm64 and riscv64
	done := make(chan struct{})
	go func() {
		_, _, _ = syscall.Syscall(syscall.SYS_IOCTL, uintptr(syscall.Stderr), tcsbrk, 1)
		close(done)
	}()
	select { // bounded: a console nobody reads must not keep the machine from ending
	case <-done:
	case <-time.After(2 * time.Second):
	}
}
