package ab

// A read-only dm-verity device set up through the device mapper's own ioctls (linux/dm-ioctl.h), so the
// image needs neither veritysetup nor dmsetup and their libraries. Four calls: create the device, load
// its one-target table, resume it (which makes the table live), and remove it again.

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

const (
	dmIoctlSize    = 312 // sizeof(struct dm_ioctl)
	dmTargetSize   = 40  // sizeof(struct dm_target_spec)
	dmReadonlyFlag = 1 << 0
	cmdDevCreate   = 3
	cmdDevRemove   = 4
	cmdDevSuspend  = 6
	cmdTableLoad   = 9
	BlockSize      = 4096 // data and hash blocks alike
)

// Verity is what a boot entry says about its slot: bootmatrix.verity=<data blocks>:<hash start block>:<salt>:<root hash>.
type Verity struct {
	DataBlocks uint64
	HashStart  uint64 // the hash tree's first block on the same device (no superblock)
	Salt       string
	RootHash   string
}

func ParseVerity(spec string) (Verity, error) {
	parts := strings.Split(spec, ":")
	if len(parts) != 4 {
		return Verity{}, fmt.Errorf("verity spec %q: want blocks:hashstart:salt:roothash", spec)
	}
	blocks, err1 := strconv.ParseUint(parts[0], 10, 64)
	start, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil || len(parts[3]) != 64 {
		return Verity{}, fmt.Errorf("verity spec %q: bad numbers or root hash", spec)
	}
	return Verity{blocks, start, parts[2], parts[3]}, nil
}

func (v Verity) String() string {
	return fmt.Sprintf("%d:%d:%s:%s", v.DataBlocks, v.HashStart, v.Salt, v.RootHash)
}

func ioctlNumber(cmd uintptr) uintptr { // _IOWR(0xfd, cmd, struct dm_ioctl)
	return 3<<30 | dmIoctlSize<<16 | 0xfd<<8 | cmd
}

func dmCall(cmd uintptr, name string, flags uint32, payload []byte) ([]byte, error) {
	control, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		if os.IsNotExist(err) {
			control, err = openControlNode()
		}
		if err != nil {
			return nil, err
		}
	}
	defer control.Close()
	size := dmIoctlSize + len(payload)
	size += (8 - size%8) % 8
	if size < 16384 {
		size = 16384 // room for what the kernel writes back
	}
	buf := make([]byte, size)
	le := binary.LittleEndian // the three arches are little-endian
	le.PutUint32(buf[0:], 4)  // interface version 4.0.0
	le.PutUint32(buf[12:], uint32(size))
	le.PutUint32(buf[16:], dmIoctlSize)
	if len(payload) > 0 {
		le.PutUint32(buf[20:], 1) // target_count
	}
	le.PutUint32(buf[28:], flags)
	copy(buf[48:48+127], name)
	copy(buf[dmIoctlSize:], payload)
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, control.Fd(), ioctlNumber(cmd), uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return nil, errno
	}
	return buf, nil
}

// openControlNode makes /dev/mapper/control from the misc device's number, as udev would.
func openControlNode() (*os.File, error) {
	raw, err := os.ReadFile("/sys/class/misc/device-mapper/dev")
	if err != nil {
		return nil, fmt.Errorf("no device mapper (is dm_mod loaded?): %w", err)
	}
	var major, minor int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(raw)), "%d:%d", &major, &minor); err != nil {
		return nil, err
	}
	_ = os.MkdirAll("/dev/mapper", 0o755)
	if err := syscall.Mknod("/dev/mapper/control", syscall.S_IFCHR|0o600, major<<8|minor); err != nil && !os.IsExist(err) {
		return nil, err
	}
	return os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
}

// OpenVerity maps `device` (data and hash tree on one device) as the read-only /dev/dm-N named `name`
// and returns its path. A table whose root hash does not match the tree's top is refused by the kernel
// only when a block is read, so callers that must know read the device (ReadAll).
func OpenVerity(name, device string, v Verity) (string, error) {
	created, err := dmCall(cmdDevCreate, name, dmReadonlyFlag, nil)
	if err != nil {
		return "", fmt.Errorf("creating %s: %w", name, err)
	}
	params := fmt.Sprintf("1 %s %s %d %d %d %d sha256 %s %s", device, device, BlockSize, BlockSize,
		v.DataBlocks, v.HashStart, v.RootHash, v.Salt)
	target := make([]byte, dmTargetSize+len(params)+1)
	binary.LittleEndian.PutUint64(target[8:], v.DataBlocks*BlockSize/512)
	copy(target[24:40], "verity")
	copy(target[dmTargetSize:], params)
	if _, err := dmCall(cmdTableLoad, name, dmReadonlyFlag, target); err != nil {
		_ = CloseVerity(name)
		return "", fmt.Errorf("loading the verity table of %s on %s: %w", name, device, err)
	}
	if _, err := dmCall(cmdDevSuspend, name, 0, nil); err != nil { // no suspend flag: resume
		_ = CloseVerity(name)
		return "", fmt.Errorf("resuming %s: %w", name, err)
	}
	dev := binary.LittleEndian.Uint64(created[40:])
	minor := (dev & 0xff) | ((dev >> 12) & 0xfff00)
	return fmt.Sprintf("/dev/dm-%d", minor), nil
}

func CloseVerity(name string) error {
	_, err := dmCall(cmdDevRemove, name, 0, nil)
	return err
}
