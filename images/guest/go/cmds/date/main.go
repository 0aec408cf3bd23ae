// date prints the current time in UTC (RFC 3339); -s prints seconds since the epoch instead.
package main

import (
	"flag"
	"fmt"
	"time"
)

func main() {
	epoch := flag.Bool("s", false, "seconds since 1970-01-01 UTC")
	flag.Parse()
	now := time.Now().UTC()
	if *epoch {
		fmt.Println(now.Unix())
		return
	}
	fmt.Println(now.Format(time.RFC3339))
}
