// tinyapp is the example application of a tinyboot ISO: PID 1 of its machine through tinyboot.Configure.
//
// It counts its boots in /persistent/boots, serves a status page on port 80 (boots, uptime, leases,
// the files of /iso, the shutdown log), and on its context's end (power button, a signal) writes a line
// to /persistent/shutdown.log before returning. GET /exit makes it return on its own, GET /panic makes
// its main goroutine panic, GET /crash panics in another goroutine (which no recover can catch): the
// first is an unrequested exit and the other two are crashes, and tinyboot reboots the machine after
// each of them. GET /poweroff and GET /reboot run /sbin/poweroff and /sbin/reboot, the signal paths a
// shell's poweroff and reboot take (a requested stop: the context ends, the shutdown is logged).
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"bootmatrix.local/tinyboot"
)

var started = time.Now()

func say(format string, args ...any) { fmt.Printf("tinyapp: "+format+"\n", args...) }

func main() {
	ctx, cleanup := tinyboot.Configure()
	defer cleanup()

	boots := countBoot()
	say("boot %d; persistent=%v; serving http on :80", boots, tinyboot.HasPersistent())
	exit, crash := make(chan struct{}), make(chan struct{})
	server := &http.Server{Addr: ":80", Handler: handlers(boots, exit, crash), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := server.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			say("http: %v", err)
		}
	}()

	select {
	case <-ctx.Done():
		say("shutdown requested after %.2f s: saving", time.Since(started).Seconds())
		shutdownLog(boots)
		stopping, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = server.Shutdown(stopping)
		say("clean shutdown done")
	case <-exit:
		say("exiting on my own")
	case <-crash:
		panic("tinyapp: /panic asked for a panic")
	}
}

func handlers(boots int, exit, crash chan struct{}) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "tinyapp up %.1f s, boot %d\n", time.Since(started).Seconds(), boots)
		fmt.Fprintf(w, "persistent: %v\n", tinyboot.HasPersistent())
		for _, lease := range tinyboot.Leases() {
			fmt.Fprintf(w, "lease: %s\n", lease)
		}
		_ = filepath.WalkDir(tinyboot.ISO, func(path string, entry os.DirEntry, err error) error {
			if err == nil && !entry.IsDir() {
				fmt.Fprintf(w, "iso: %s\n", strings.TrimPrefix(path, tinyboot.ISO+"/"))
			}
			return nil
		})
		if data, err := os.ReadFile(filepath.Join(tinyboot.Persistent, "shutdown.log")); err == nil {
			for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
				fmt.Fprintf(w, "shutdown-log: %s\n", line)
			}
		}
	})
	once := func(ch chan struct{}, what string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "%s\n", what)
			go func() {
				time.Sleep(200 * time.Millisecond) // let the reply leave first
				close(ch)
			}()
		}
	}
	mux.HandleFunc("/exit", once(exit, "exiting"))
	mux.HandleFunc("/panic", once(crash, "panicking"))
	// What a shell's poweroff and reboot do: /sbin/poweroff or /sbin/reboot (this binary under that
	// name) signals PID 1.
	for _, command := range []string{"poweroff", "reboot"} {
		mux.HandleFunc("/"+command, func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "running /sbin/%s\n", command)
			go func() {
				if output, err := exec.Command("/sbin/" + command).CombinedOutput(); err != nil {
					say("/sbin/%s: %v %s", command, err, output)
				}
			}()
		})
	}
	mux.HandleFunc("/crash", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "crashing")
		go func() {
			time.Sleep(200 * time.Millisecond)
			panic("tinyapp: /crash panics outside main")
		}()
	})
	return mux
}

// countBoot adds one to /persistent/boots and returns it (0 without a persistent disk).
func countBoot() int {
	if !tinyboot.HasPersistent() {
		say("/persistent is absent: boots are not counted")
		return 0
	}
	path := filepath.Join(tinyboot.Persistent, "boots")
	data, _ := os.ReadFile(path)
	count, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	count++
	if err := writeSynced(path, []byte(strconv.Itoa(count)+"\n"), false); err != nil {
		say("counting the boot: %v", err)
	}
	return count
}

func shutdownLog(boots int) {
	if !tinyboot.HasPersistent() {
		say("/persistent is absent: the shutdown is not logged")
		return
	}
	line := fmt.Sprintf("boot %d: clean shutdown after %.1f s\n", boots, time.Since(started).Seconds())
	if err := writeSynced(filepath.Join(tinyboot.Persistent, "shutdown.log"), []byte(line), true); err != nil {
		say("shutdown log: %v", err)
	}
}

func writeSynced(path string, data []byte, appendTo bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if appendTo {
		flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	file, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return err
	}
	if _, err := file.Write(data); err != nil {
		file.Close()
		return err
	}
	return errors.Join(file.Sync(), file.Close())
}
