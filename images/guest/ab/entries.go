package ab

// Boot Loader Specification entries with boot counting (systemd's Automatic Boot Assessment), on the
// ESP: loader/entries/ab-<generation>[+<left>[-<done>]].conf. systemd-boot picks the first entry after
// sorting (the same sort-key, so the highest version first; an entry with no tries left goes last),
// renames it with one try fewer before it starts it, and our bless drops the counter after a good boot.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

const SortKey = "bootmatrix-ab"

var entryName = regexp.MustCompile(`^(ab-(\d+))(?:\+(\d+)(?:-(\d+))?)?\.conf$`)

type Entry struct {
	File       string // its file name
	ID         string // ab-<generation>
	Generation int
	Left, Done int // the counter; Left == -1: none (blessed or never counted)
	Slot       string
	Options    string
}

func (e Entry) Counting() bool { return e.Left >= 0 }

// Entries lists the ab-* entries in dir, highest generation first.
func Entries(dir string) ([]Entry, error) {
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var found []Entry
	for _, name := range names {
		match := entryName.FindStringSubmatch(name.Name())
		if match == nil {
			continue
		}
		entry := Entry{File: name.Name(), ID: match[1], Left: -1}
		entry.Generation, _ = strconv.Atoi(match[2])
		if match[3] != "" {
			entry.Left, _ = strconv.Atoi(match[3])
		}
		if match[4] != "" {
			entry.Done, _ = strconv.Atoi(match[4])
		}
		text, err := os.ReadFile(filepath.Join(dir, name.Name()))
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(text), "\n") {
			if rest, ok := strings.CutPrefix(line, "options "); ok {
				entry.Options = rest
				if b, err := ParseCmdline(rest); err == nil {
					entry.Slot = b.Slot
				}
			}
		}
		found = append(found, entry)
	}
	sort.Slice(found, func(i, j int) bool { return found[i].Generation > found[j].Generation })
	return found, nil
}

// WithSlot is `options` with its bootmatrix.* words replaced by this slot's.
func WithSlot(options, slot, id string, v Verity) string {
	var kept []string
	for _, word := range strings.Fields(options) {
		if !strings.HasPrefix(word, "bootmatrix.") {
			kept = append(kept, word)
		}
	}
	kept = append(kept, "bootmatrix.slot="+slot, "bootmatrix.entry="+id, "bootmatrix.verity="+v.String())
	return strings.Join(kept, " ")
}

// EntryText is an entry file: the shared kernel and initramfs, this slot's options.
func EntryText(generation int, version, options string) string {
	return fmt.Sprintf("title bootmatrix A/B version %s\nsort-key %s\nversion %d\nlinux /ab/linux\ninitrd /ab/initrd\noptions %s\n",
		version, SortKey, generation, options)
}

// WriteNew puts an entry in place with `tries` boot attempts: written under a temporary name, synced,
// renamed, synced, so a cut leaves either no entry or the whole one.
func WriteNew(dir string, generation int, text string, tries int) (string, error) {
	name := fmt.Sprintf("ab-%d+%d-0.conf", generation, tries)
	temporary := filepath.Join(dir, ".new.tmp")
	if err := os.WriteFile(temporary, []byte(text), 0o644); err != nil {
		return "", err
	}
	syscall.Sync()
	if err := os.Rename(temporary, filepath.Join(dir, name)); err != nil {
		return "", err
	}
	syscall.Sync()
	return name, nil
}

// Remove deletes the entries that boot `slot` (before the slot is overwritten), and syncs.
func Remove(dir, slot string) ([]string, error) {
	entries, err := Entries(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, entry := range entries {
		if entry.Slot == slot {
			if err := os.Remove(filepath.Join(dir, entry.File)); err != nil {
				return removed, err
			}
			removed = append(removed, entry.File)
		}
	}
	_ = os.Remove(filepath.Join(dir, ".new.tmp"))
	syscall.Sync()
	return removed, nil
}

// Bless drops the counter of entry `id`: the boot it started was good. False when it had none.
func Bless(dir, id string) (bool, error) {
	entries, err := Entries(dir)
	if err != nil {
		return false, err
	}
	for _, entry := range entries {
		if entry.ID == id {
			if !entry.Counting() {
				return false, nil
			}
			if err := os.Rename(filepath.Join(dir, entry.File), filepath.Join(dir, id+".conf")); err != nil {
				return false, err
			}
			syscall.Sync()
			return true, nil
		}
	}
	return false, fmt.Errorf("no entry %s in %s", id, dir)
}
