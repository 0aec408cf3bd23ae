// dmesg prints the kernel's log buffer (syslog(2) READ_ALL).
package main

import (
	"os"
	"syscall"

	"bootmatrix.local/guest/internal/cli"
)

const (
	syslogReadAll    = 3
	syslogBufferSize = 10
)

func main() {
	size, err := syscall.Klogctl(syslogBufferSize, nil)
	if err != nil {
		cli.Fatal("dmesg", err)
	}
	buffer := make([]byte, size)
	n, err := syscall.Klogctl(syslogReadAll, buffer)
	if err != nil {
		cli.Fatal("dmesg", err)
	}
	os.Stdout.Write(buffer[:n])
}
