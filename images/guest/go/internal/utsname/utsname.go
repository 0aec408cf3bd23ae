// Package utsname reads the kernel's names (uname(2)) as strings.
package utsname

import (
	"strings"
	"syscall"
)

// text reads a NUL-terminated utsname field: [65]int8 on amd64 and arm64, [65]uint8 on riscv64.
func text[T int8 | uint8](field [65]T) string {
	var out strings.Builder
	for _, c := range field {
		if c == 0 {
			break
		}
		out.WriteByte(byte(c))
	}
	return out.String()
}

// Names are the fields of uname(2).
type Names struct {
	Sysname, Nodename, Release, Version, Machine string
}

// Get returns this kernel's names.
func Get() (Names, error) {
	var name syscall.Utsname
	if err := syscall.Uname(&name); err != nil {
		return Names{}, err
	}
	return Names{text(name.Sysname), text(name.Nodename), text(name.Release), text(name.Version),
		text(name.Machine)}, nil
}
