// sha256sum prints the SHA-256 of each file (or standard input) as "<hex>  <name>".
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"bootmatrix.local/guest/internal/inputs"
)

func main() {
	os.Exit(inputs.Each("sha256sum", os.Args[1:], func(in io.Reader, name string) error {
		digest := sha256.New()
		if _, err := io.Copy(digest, in); err != nil {
			return err
		}
		fmt.Printf("%s  %s\n", hex.EncodeToString(digest.Sum(nil)), name)
		return nil
	}))
}
