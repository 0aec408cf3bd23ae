package ab

// The boot choice where no systemd-boot runs (SeaBIOS: syslinux starts one kernel and initramfs for
// both slots): the initramfs chooses from the same entries with the same counting, so both paths share
// one update agent and one on-disk state. As systemd-boot does: the highest generation first, an entry
// with no tries left last, and a counted entry renamed with one try fewer before it is started.

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

func exhausted(e Entry) bool { return e.Counting() && e.Left == 0 }

// Select picks the entry to boot from dir and counts the try; it returns the entry as chosen and the
// file name it has now.
func Select(dir string) (Entry, string, error) {
	entries, err := Entries(dir)
	if err != nil {
		return Entry{}, "", err
	}
	if len(entries) == 0 {
		return Entry{}, "", fmt.Errorf("no boot entries in %s", dir)
	}
	sort.SliceStable(entries, func(i, j int) bool { return !exhausted(entries[i]) && exhausted(entries[j]) })
	chosen := entries[0]
	name := chosen.File
	if chosen.Counting() && chosen.Left > 0 {
		name = fmt.Sprintf("%s+%d-%d.conf", chosen.ID, chosen.Left-1, chosen.Done+1)
		if err := os.Rename(filepath.Join(dir, chosen.File), filepath.Join(dir, name)); err != nil {
			return chosen, "", err
		}
		syscall.Sync()
	}
	return chosen, name, nil
}
