// wget fetches a URL over HTTP to a file (-O file, "-" for standard output; default: the last part of
// the URL's path) and prints the size and sha256 of what it wrote. A status other than 200 is an error.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"time"

	"bootmatrix.local/guest/internal/cli"
)

func main() {
	output := flag.String("O", "", "file to write (- for standard output)")
	timeout := flag.Duration("T", 60*time.Second, "give up after this long")
	flag.Parse()
	if flag.NArg() != 1 {
		cli.Usage("wget", "[-O file] [-T timeout] url")
	}
	url := flag.Arg(0)
	client := http.Client{Timeout: *timeout}
	response, err := client.Get(url)
	if err != nil {
		cli.Fatal("wget", err)
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		cli.Fatal("wget", fmt.Errorf("server returned %s", response.Status))
	}
	target := *output
	if target == "" {
		target = path.Base(response.Request.URL.Path)
		if target == "/" || target == "." {
			target = "index.html"
		}
	}
	var sink io.Writer = os.Stdout
	if target != "-" {
		file, err := os.Create(target)
		if err != nil {
			cli.Fatal("wget", err)
		}
		defer file.Close()
		sink = file
	}
	digest := sha256.New()
	started := time.Now()
	size, err := io.Copy(io.MultiWriter(sink, digest), response.Body)
	if err != nil {
		cli.Fatal("wget", err)
	}
	seconds := time.Since(started).Seconds()
	fmt.Fprintf(os.Stderr, "wget: %s: %d bytes sha256 %x in %.2f s\n", target, size, digest.Sum(nil), seconds)
}
