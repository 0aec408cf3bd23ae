package tinyboot

import (
	"encoding/binary"
	"net"
	"syscall"
)

// Interface configuration through the classic ioctls: a few fixed-layout structs, no netlink encoder.
// struct ifreq is 40 bytes on every 64-bit Linux arch: the name, then a union (flags or a sockaddr).
type ifreq [40]byte

func newIfreq(name string) *ifreq {
	var request ifreq
	copy(request[:15], name)
	return &request
}

func ioctl(request uintptr, argument *byte) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), request, uintptr(unsafePointer(argument))); errno != 0 {
		return errno
	}
	return nil
}

func linkUp(name string) error {
	request := newIfreq(name)
	if err := ioctl(syscall.SIOCGIFFLAGS, &request[0]); err != nil {
		return err
	}
	flags := binary.NativeEndian.Uint16(request[16:]) | syscall.IFF_UP
	binary.NativeEndian.PutUint16(request[16:], flags)
	return ioctl(syscall.SIOCSIFFLAGS, &request[0])
}

// putSockaddr writes a struct sockaddr_in for ip into buffer (16 bytes).
func putSockaddr(buffer []byte, ip net.IP) {
	binary.NativeEndian.PutUint16(buffer[0:], syscall.AF_INET)
	copy(buffer[4:8], ip.To4())
}

func setAddress(name string, ip net.IP, mask net.IPMask) error {
	request := newIfreq(name)
	putSockaddr(request[16:], ip)
	if err := ioctl(syscall.SIOCSIFADDR, &request[0]); err != nil {
		return err
	}
	request = newIfreq(name)
	putSockaddr(request[16:], net.IP(mask))
	return ioctl(syscall.SIOCSIFNETMASK, &request[0])
}

// addDefaultRoute adds "default via gateway dev name". struct rtentry on a 64-bit arch: pad (8), dst,
// gateway, genmask (3 x 16), flags (2), pad (2 + 4), pad (8), pad pointer (8), metric (2 + 6), dev
// pointer (8), window (8), irtt (4 + 4): 112 bytes.
func addDefaultRoute(name string, gateway net.IP) error {
	var route [112]byte
	putSockaddr(route[8:], net.IPv4zero)
	putSockaddr(route[24:], gateway)
	putSockaddr(route[40:], net.IPv4zero)
	binary.NativeEndian.PutUint16(route[56:], syscall.RTF_UP|syscall.RTF_GATEWAY)
	device := append([]byte(name), 0)
	binary.NativeEndian.PutUint64(route[88:], uint64(uintptr(unsafePointer(&device[0]))))
	err := ioctl(syscall.SIOCADDRT, &route[0])
	keepAlive(device)
	return err
}
