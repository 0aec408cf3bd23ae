// sha256sum prints the SHA-256 of each file (or standard input) as "<hex>  <name>".
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

func main() {
	status := 0
	if len(os.Args) == 1 {
		os.Args = append(os.Args, "-")
	}
	for _, name := range os.Args[1:] {
		var in io.Reader = os.Stdin
		if name != "-" {
			file, err := os.Open(name)
			if err != nil {
				fmt.Fprintln(os.Stderr, "sha256sum:", err)
				status = 1
				continue
			}
			defer file.Close()
			in = file
		}
		digest := sha256.New()
		if _, err := io.Copy(digest, in); err != nil {
			fmt.Fprintln(os.Stderr, "sha256sum:", err)
			status = 1
			continue
		}
		fmt.Printf("%s  %s\n", hex.EncodeToString(digest.Sum(nil)), name)
	}
	os.Exit(status)
}
