// uname prints the kernel name, release and machine (uname -srm).
package main

import (
	"fmt"
	"os"
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

func main() {
	var name syscall.Utsname
	if err := syscall.Uname(&name); err != nil {
		fmt.Fprintln(os.Stderr, "uname:", err)
		os.Exit(1)
	}
	fmt.Println(text(name.Sysname), text(name.Release), text(name.Machine))
}
