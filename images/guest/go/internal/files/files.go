// Package files copies a regular file, the one step cp, mv (across file systems) and init share.
package files

import (
	"io"
	"os"
)

// Copy writes source's bytes to target (created or truncated with perm) and returns how many.
func Copy(source, target string, perm os.FileMode) (int64, error) {
	in, err := os.Open(source)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, in)
	if closeErr := out.Close(); err == nil {
		err = closeErr
	}
	return n, err
}
