package tinyboot

import (
	"runtime"
	"unsafe"
)

// unsafePointer is the one place the package hands Go memory to a system call.
func unsafePointer[T any](p *T) unsafe.Pointer { return unsafe.Pointer(p) }

// keepAlive keeps memory a system call reads through a pointer stored as an integer.
func keepAlive(data []byte) { runtime.KeepAlive(data) }
