// sleep waits for the given seconds (fractions allowed) or Go duration ("1.5", "200ms").
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"bootmatrix.local/guest/internal/cli"
)

func main() {
	if len(os.Args) != 2 {
		cli.Usage("sleep", "seconds")
	}
	if seconds, err := strconv.ParseFloat(os.Args[1], 64); err == nil {
		time.Sleep(time.Duration(seconds * float64(time.Second)))
		return
	}
	duration, err := time.ParseDuration(os.Args[1])
	if err != nil {
		cli.Fatal("sleep", fmt.Errorf("invalid time %q", os.Args[1]))
	}
	time.Sleep(duration)
}
