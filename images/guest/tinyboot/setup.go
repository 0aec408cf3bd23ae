package tinyboot

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ModuleList names the kernel modules to load, one file name per line, dependencies first; the image
// builder writes it and puts the modules beside it.
const ModuleList = "/lib/modules/load-order"

// setup makes the machine ready for the app. Every step says what failed on the console and goes on:
// a machine without a NIC or a disk still runs its app.
func setup() {
	mount("proc", "/proc", "proc", 0, "")
	mount("sysfs", "/sys", "sysfs", 0, "")
	mount("devtmpfs", "/dev", "devtmpfs", 0, "mode=0755")
	mount("tmpfs", "/run", "tmpfs", 0, "mode=0755")
	mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777")
	loadModules()
	if err := linkUp("lo"); err != nil {
		Logf("loopback: %v", err)
	}
	var wait sync.WaitGroup
	wait.Add(1)
	go func() { // DHCP on every NIC while the disks are looked for
		defer wait.Done()
		configureNetwork()
	}()
	mountDisks()
	wait.Wait()
}

func mount(source, target, fstype string, flags uintptr, data string) {
	if err := os.MkdirAll(target, 0o755); err != nil {
		Logf("mkdir %s: %v", target, err)
	}
	if err := syscall.Mount(source, target, fstype, flags, data); err != nil && !errors.Is(err, syscall.EBUSY) {
		Logf("mount %s on %s: %v", fstype, target, err)
	}
}

func loadModules() {
	list, err := os.Open(ModuleList)
	if err != nil {
		Logf("no module list: %v", err)
		return
	}
	defer list.Close()
	var loaded []string
	lines := bufio.NewScanner(list)
	for lines.Scan() {
		name := strings.TrimSpace(lines.Text())
		if name == "" {
			continue
		}
		if err := loadModule(filepath.Join(filepath.Dir(ModuleList), name)); err != nil {
			Logf("module %s: %v", name, err)
			continue
		}
		loaded = append(loaded, strings.TrimSuffix(name, ".ko"))
	}
	Logf("modules: %s", strings.Join(loaded, " "))
}

func loadModule(path string) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	empty := []byte{0}
	_, _, errno := syscall.Syscall(sysFinitModule, file.Fd(), uintptr(unsafePointer(&empty[0])), 0)
	if errno != 0 && errno != syscall.EEXIST {
		return errno
	}
	return nil
}

// mountDisks mounts the first iso9660 device read-only at /iso and the btrfs file system labelled
// PersistentLabel at /persistent. SCSI CD-ROMs are found asynchronously, so the block devices are
// looked at until both are there, or for diskWait (diskSettle once the CD is there).
func mountDisks() {
	const diskWait, diskSettle = 8 * time.Second, 1 * time.Second
	start := time.Now()
	var isoAt time.Time
	isoDone, persistentDone := false, false
	for !(isoDone && persistentDone) {
		for _, device := range blockDevices() {
			if !isoDone && isISO9660(device) {
				mount(device, ISO, "iso9660", syscall.MS_RDONLY, "")
				Logf("%s: iso9660, mounted at %s", device, ISO)
				isoDone, isoAt = true, time.Now()
			}
			if !persistentDone && isBtrfs(device, PersistentLabel) {
				mount(device, Persistent, "btrfs", 0, "")
				Logf("%s: btrfs labelled %s, mounted at %s", device, PersistentLabel, Persistent)
				persistentDone = true
			}
		}
		if time.Since(start) > diskWait || (isoDone && time.Since(isoAt) > diskSettle) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !isoDone {
		Logf("no iso9660 device: %s stays empty", ISO)
	}
	if !persistentDone {
		Logf("no btrfs file system labelled %s: %s is absent", PersistentLabel, Persistent)
	}
}

func blockDevices() []string {
	entries, _ := os.ReadDir("/sys/class/block")
	var devices []string
	for _, entry := range entries {
		devices = append(devices, "/dev/"+entry.Name())
	}
	return devices
}

func readAt(device string, offset int64, size int) []byte {
	file, err := os.Open(device)
	if err != nil {
		return nil
	}
	defer file.Close()
	data := make([]byte, size)
	if n, err := file.ReadAt(data, offset); err != nil || n != size {
		return nil
	}
	return data
}

// isISO9660: the primary volume descriptor at sector 16 starts with 1 "CD001".
func isISO9660(device string) bool {
	return string(readAt(device, 16*2048+1, 5)) == "CD001"
}

// isBtrfs: the superblock at 64 KiB has the magic at 0x40 and the label at 0x12b.
func isBtrfs(device, label string) bool {
	superblock := readAt(device, 0x10000, 0x22b)
	if superblock == nil || string(superblock[0x40:0x48]) != "_BHRfS_M" {
		return false
	}
	return strings.TrimRight(string(superblock[0x12b:0x22b]), "\x00") == label
}
