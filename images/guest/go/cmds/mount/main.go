// mount with no arguments lists the mounts (/proc/mounts); otherwise
// mount [-t type] [-o options] source target. Options the kernel takes as flags (ro, rw, nosuid, nodev,
// noexec, remount, bind, rec) become flags; the rest are passed to the file system as data.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"syscall"

	"bootmatrix.local/guest/internal/cli"
)

var flagOptions = map[string]uintptr{
	"ro": syscall.MS_RDONLY, "rw": 0, "nosuid": syscall.MS_NOSUID, "nodev": syscall.MS_NODEV,
	"noexec": syscall.MS_NOEXEC, "remount": syscall.MS_REMOUNT, "bind": syscall.MS_BIND,
	"rec": syscall.MS_REC, "sync": syscall.MS_SYNCHRONOUS, "noatime": syscall.MS_NOATIME,
}

func main() {
	fstype := flag.String("t", "", "file system type")
	options := flag.String("o", "", "comma-separated mount options")
	flag.Parse()
	if flag.NArg() == 0 {
		mounts, err := os.ReadFile("/proc/mounts")
		if err != nil {
			cli.Fatal("mount", err)
		}
		os.Stdout.Write(mounts)
		return
	}
	if flag.NArg() != 2 {
		cli.Usage("mount", "[-t type] [-o options] source target")
	}
	var flags uintptr
	var data []string
	for _, option := range strings.Split(*options, ",") {
		if bit, ok := flagOptions[option]; ok {
			flags |= bit
		} else if option != "" {
			data = append(data, option)
		}
	}
	if err := syscall.Mount(flag.Arg(0), flag.Arg(1), *fstype, flags, strings.Join(data, ",")); err != nil {
		cli.Fatal("mount", fmt.Errorf("%s on %s: %w", flag.Arg(0), flag.Arg(1), err))
	}
}
