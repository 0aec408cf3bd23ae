package ab

import (
	"fmt"
	"os"
	"strings"
)

// Booted is what the boot entry told the kernel: the slot, the entry's id and the slot's verity.
type Booted struct {
	Slot   string // "a" or "b"
	Entry  string // the entry's id without its counter: "ab-2"
	Verity Verity
}

// SelectedOptions is where the initramfs's selector leaves the chosen entry's options (tmpfs, moved
// into the slot): on that path the kernel's command line does not name the slot.
const SelectedOptions = "/run/ab/cmdline"

func ReadBooted() (Booted, error) {
	raw, err := os.ReadFile(SelectedOptions)
	if os.IsNotExist(err) {
		raw, err = os.ReadFile("/proc/cmdline")
	}
	if err != nil {
		return Booted{}, err
	}
	return ParseCmdline(string(raw))
}

func ParseCmdline(line string) (Booted, error) {
	var b Booted
	var verity string
	for _, word := range strings.Fields(line) {
		key, value, _ := strings.Cut(word, "=")
		switch key {
		case "bootmatrix.slot":
			b.Slot = value
		case "bootmatrix.entry":
			b.Entry = value
		case "bootmatrix.verity":
			verity = value
		}
	}
	if b.Slot != "a" && b.Slot != "b" {
		return b, fmt.Errorf("no bootmatrix.slot=a|b on the kernel command line")
	}
	v, err := ParseVerity(verity)
	b.Verity = v
	return b, err
}

// Other is the slot an update writes.
func Other(slot string) string {
	if slot == "a" {
		return "b"
	}
	return "a"
}

// SlotDevice is the partition of a slot: the disk's 2nd (a) and 3rd (b).
func SlotDevice(slot string) string {
	if slot == "a" {
		return "/dev/vda2"
	}
	return "/dev/vda3"
}
