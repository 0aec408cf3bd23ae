// abagent: the A/B image's slot opener (in the initramfs), update agent and blesser (in the slot).
//
//	abagent open <device> <verity spec> <name>   map a slot through dm-verity, read it all, print /dev/dm-N
//	abagent update <base url> [tries]           install the payload at base into the inactive slot
//	abagent bless                               drop the booted entry's boot counter
//	abagent status                              the booted slot and the entries, one line each
//	abagent select <entries dir> <out file>     choose and count the entry to boot (no systemd-boot)
package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"bootmatrix.local/ab"
)

func fail(err error) {
	fmt.Printf("ab-agent: failed %v\n", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: abagent open|update|bless|status"))
	}
	switch os.Args[1] {
	case "open":
		if len(os.Args) != 5 {
			fail(fmt.Errorf("usage: abagent open <device> <verity spec> <name>"))
		}
		v, err := ab.ParseVerity(os.Args[3])
		if err != nil {
			fail(err)
		}
		if err := ab.CheckVerity(os.Args[4]+"-check", os.Args[2], v); err != nil {
			fail(err)
		}
		mapped, err := ab.OpenVerity(os.Args[4], os.Args[2], v)
		if err != nil {
			fail(err)
		}
		fmt.Println(mapped)
	case "update":
		if len(os.Args) < 3 {
			fail(fmt.Errorf("usage: abagent update <base url> [tries]"))
		}
		tries := 3
		if len(os.Args) > 3 {
			tries, _ = strconv.Atoi(os.Args[3])
		}
		name, err := ab.Update(os.Args[2], tries)
		if err != nil {
			fail(err)
		}
		ab.Say("reboot", "into %s", name)
		syscall.Sync()
		if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART); err != nil {
			fail(err)
		}
	case "bless":
		booted, err := ab.ReadBooted()
		if err != nil {
			fail(err)
		}
		changed, err := ab.Bless(ab.EntriesDir, booted.Entry)
		if err != nil {
			fail(err)
		}
		if changed {
			ab.Say("blessed", "%s", booted.Entry)
		} else {
			ab.Say("good", "%s (no counter)", booted.Entry)
		}
	case "select":
		if len(os.Args) != 4 {
			fail(fmt.Errorf("usage: abagent select <entries dir> <out file>"))
		}
		chosen, now, err := ab.Select(os.Args[2])
		if err != nil {
			fail(err)
		}
		if err := os.WriteFile(os.Args[3], []byte(chosen.Options+"\n"), 0o644); err != nil {
			fail(err)
		}
		ab.Say("selected", "%s (now %s), slot %s", chosen.File, now, chosen.Slot)
	case "status":
		booted, err := ab.ReadBooted()
		if err != nil {
			fail(err)
		}
		fmt.Printf("booted slot=%s entry=%s\n", booted.Slot, booted.Entry)
		entries, err := ab.Entries(ab.EntriesDir)
		if err != nil {
			fail(err)
		}
		for _, entry := range entries {
			fmt.Printf("entry %s slot=%s\n", entry.File, entry.Slot)
		}
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}
