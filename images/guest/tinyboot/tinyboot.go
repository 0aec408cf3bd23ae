// Package tinyboot turns a Go program into the whole user space of a machine: the program is PID 1 of
// an initramfs, and Configure gives it a configured machine and a context that ends when the machine is
// asked to power off or reboot.
//
//	func main() {
//		ctx, cleanup := tinyboot.Configure()
//		defer cleanup()
//		<-ctx.Done() // serve until the power button
//	}
//
// PID 1 never runs the application itself. It sets the machine up (kernel file systems, modules,
// loopback, DHCP on every NIC, /iso and /persistent), then starts the same binary again as its only
// child and supervises it. So a panic in any goroutine of the application, which no recover can catch,
// still ends in an orderly reboot with /persistent unmounted, and a kernel never sees PID 1 die
// ("Attempted to kill init!"). PID 1 turns every power request into SIGTERM for the child, gives it
// StopGrace to finish, and then powers off (or reboots, for a reboot request). A child that exits
// without a request, or panics, makes PID 1 reboot the machine.
//
// Power requests: the power button (evdev KEY_POWER: the ACPI button driver on x86 and on arm64 with
// ACPI, gpio-keys on a device-tree arm64 board), SIGUSR2 or SIGUSR1 (power off: what busybox's
// poweroff and the kernel's orderly_poweroff through /sbin/poweroff send), SIGTERM (reboot) and SIGINT
// (Ctrl-Alt-Del). The binary answers to the names poweroff and reboot by signalling PID 1, so
// /sbin/poweroff can be a link to it.
package tinyboot

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"
)

// StopGrace is how long the application has between its context's end and being killed.
const StopGrace = 10 * time.Second

// Exit status of a child whose main panicked (cleanup's recover).
const panicStatus = 2

// Logf prints one line on the console, prefixed so that a reader (and the tests) can tell the layer.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "tinyboot: "+format+"\n", args...)
}

// Configure prepares the machine (as PID 1) and returns the application's context and its cleanup,
// which must be deferred. Outside PID 1 and its child (a developer's host), it returns a context that
// ends on SIGTERM or SIGINT and a cleanup that only reports a panic.
func Configure() (context.Context, func()) {
	switch filepath.Base(os.Args[0]) {
	case "poweroff", "halt":
		os.Exit(signalInit(syscall.SIGUSR2))
	case "reboot":
		os.Exit(signalInit(syscall.SIGTERM))
	}
	if os.Getpid() == 1 {
		supervise() // never returns
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	cleanup := func() {
		stop()
		if r := recover(); r != nil {
			Logf("app panicked: %v\n%s", r, debug.Stack())
			os.Exit(panicStatus)
		}
	}
	return ctx, cleanup
}

func signalInit(sig syscall.Signal) int {
	if err := syscall.Kill(1, sig); err != nil {
		fmt.Fprintf(os.Stderr, "%s: signalling PID 1: %v\n", os.Args[0], err)
		return 1
	}
	return 0
}

// Persistent is where the btrfs file system labelled PersistentLabel is mounted, when there is one.
const Persistent = "/persistent"

// ISO is where the first iso9660 device (the boot CD) is mounted, read-only.
const ISO = "/iso"

// PersistentLabel is the btrfs label Configure looks for.
const PersistentLabel = "tinyboot"

// HasPersistent says whether /persistent is a mounted file system (and not the empty folder under it).
func HasPersistent() bool {
	var here, parent syscall.Stat_t
	if syscall.Stat(Persistent, &here) != nil || syscall.Stat("/", &parent) != nil {
		return false
	}
	return here.Dev != parent.Dev
}
