// cat copies files, or standard input, to standard output.
package main

import (
	"io"
	"os"

	"bootmatrix.local/guest/internal/inputs"
)

func main() {
	os.Exit(inputs.Each("cat", os.Args[1:], func(in io.Reader, _ string) error {
		_, err := io.Copy(os.Stdout, in)
		return err
	}))
}
