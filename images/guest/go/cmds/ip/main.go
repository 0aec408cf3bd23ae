// ip shows and changes network interfaces, IPv4 addresses and routes, with the words of iproute2:
//
//	ip [-4] [-o] [-br] addr|a [show [dev] [IFACE]]       ip addr add ADDR/PREFIX dev IFACE
//	ip [-o] link|l [show [dev] [IFACE]]                  ip link set [dev] IFACE up|down
//	ip route|r [show [default]]                          ip route add default|NET/PREFIX [via GW] [dev IFACE]
//
// Changes go through the classic ioctls (SIOCSIFADDR, SIOCSIFNETMASK, SIOCSIFFLAGS, SIOCADDRT), which
// need nothing but the standard library; routes are read from /proc/net/route. IPv4 only.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"bootmatrix.local/guest/internal/cli"
)

const usage = "[-4] [-o] [-br] addr|link|route [show|add|set ...] (see the source for the forms)"

type options struct{ oneline, brief bool }

func main() {
	var opts options
	args := os.Args[1:]
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "-4":
		case "-o", "-oneline":
			opts.oneline = true
		case "-br", "-brief":
			opts.brief = true
		default:
			cli.Usage("ip", usage)
		}
		args = args[1:]
	}
	if len(args) == 0 {
		cli.Usage("ip", usage)
	}
	object, rest := args[0], args[1:]
	command := "show"
	if len(rest) > 0 {
		command, rest = rest[0], rest[1:]
	}
	if command == "list" || command == "ls" || command == "sh" {
		command = "show"
	}
	var err error
	switch {
	case prefixOf(object, "address", 1) && command == "show":
		err = showInterfaces(opts, deviceArg(rest), true)
	case prefixOf(object, "address", 1) && command == "add":
		err = addAddress(rest)
	case prefixOf(object, "link", 1) && command == "show":
		err = showInterfaces(opts, deviceArg(rest), false)
	case prefixOf(object, "link", 1) && command == "set":
		err = setLink(rest)
	case prefixOf(object, "route", 1) && command == "show":
		err = showRoutes(rest)
	case prefixOf(object, "route", 1) && command == "add":
		err = addRoute(rest)
	default:
		cli.Usage("ip", usage)
	}
	if err != nil {
		cli.Fatal("ip", err)
	}
}

// prefixOf: iproute2 takes any prefix of an object's name that is at least `least` letters long.
func prefixOf(word, full string, least int) bool {
	return len(word) >= least && strings.HasPrefix(full, word)
}

func deviceArg(args []string) string {
	if len(args) > 0 && args[0] == "dev" {
		args = args[1:]
	}
	if len(args) > 0 {
		return args[0]
	}
	return ""
}

// keyword returns the value after `name` in "name value" pairs.
func keyword(args []string, name string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == name {
			return args[i+1]
		}
	}
	return ""
}

func flagWords(flags net.Flags) string {
	var words []string
	for _, f := range []struct {
		flag net.Flags
		word string
	}{{net.FlagLoopback, "LOOPBACK"}, {net.FlagBroadcast, "BROADCAST"}, {net.FlagPointToPoint, "POINTOPOINT"},
		{net.FlagMulticast, "MULTICAST"}, {net.FlagUp, "UP"}, {net.FlagRunning, "LOWER_UP"}} {
		if flags&f.flag != 0 {
			words = append(words, f.word)
		}
	}
	return strings.Join(words, ",")
}

func operState(name string) string {
	state, err := os.ReadFile("/sys/class/net/" + name + "/operstate")
	if err != nil {
		return "UNKNOWN"
	}
	return strings.ToUpper(strings.TrimSpace(string(state)))
}

func showInterfaces(opts options, only string, addresses bool) error {
	interfaces, err := net.Interfaces()
	if err != nil {
		return err
	}
	found := false
	for _, iface := range interfaces {
		if only != "" && iface.Name != only {
			continue
		}
		found = true
		var inet []string
		if addresses {
			addrs, _ := iface.Addrs()
			for _, addr := range addrs {
				if ipnet, ok := addr.(*net.IPNet); ok && ipnet.IP.To4() != nil {
					inet = append(inet, describeAddress(ipnet, iface.Name))
				}
			}
		}
		state := operState(iface.Name)
		switch {
		case opts.brief:
			var plain []string
			for _, line := range inet {
				plain = append(plain, strings.Fields(line)[1])
			}
			fmt.Printf("%-16s %-14s %s\n", iface.Name, state, strings.Join(plain, " "))
		case opts.oneline && addresses:
			for _, line := range inet {
				fmt.Printf("%d: %-6s %s\n", iface.Index, iface.Name, line)
			}
		default:
			fmt.Printf("%d: %s: <%s> mtu %d state %s\n", iface.Index, iface.Name, flagWords(iface.Flags), iface.MTU,
				state)
			kind := "ether"
			if iface.Flags&net.FlagLoopback != 0 {
				kind = "loopback"
			}
			fmt.Printf("    link/%s %s\n", kind, iface.HardwareAddr)
			for _, line := range inet {
				fmt.Printf("    %s\n", line)
			}
		}
	}
	if only != "" && !found {
		return fmt.Errorf("device %q does not exist", only)
	}
	return nil
}

func describeAddress(ipnet *net.IPNet, name string) string {
	ones, _ := ipnet.Mask.Size()
	ip := ipnet.IP.To4()
	line := fmt.Sprintf("inet %s/%d", ip, ones)
	scope := "global"
	if ip.IsLoopback() {
		scope = "host"
	} else if ones < 32 {
		broadcast := make(net.IP, 4)
		for i := range broadcast {
			broadcast[i] = ip[i] | ^ipnet.Mask[i]
		}
		line += " brd " + broadcast.String()
	}
	return line + " scope " + scope + " " + name
}

// -- changes: ioctls on an AF_INET datagram socket ---------------------------------------------------

const ifreqSize = 40 // struct ifreq on 64-bit Linux: 16-byte name, 24-byte union

func ifreq(name string) ([]byte, error) {
	if len(name) == 0 || len(name) >= 16 {
		return nil, fmt.Errorf("bad interface name %q", name)
	}
	request := make([]byte, ifreqSize)
	copy(request, name)
	return request, nil
}

// putSockaddr writes a struct sockaddr_in (family, port 0, address) at buf[offset:].
func putSockaddr(buf []byte, offset int, ip net.IP) {
	binary.LittleEndian.PutUint16(buf[offset:], syscall.AF_INET) // every arch here is little-endian
	copy(buf[offset+4:offset+8], ip.To4())
}

func ioctl(request uintptr, argument []byte) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), request, uintptr(unsafe.Pointer(&argument[0])))
	runtime.KeepAlive(argument)
	if errno != 0 {
		return errno
	}
	return nil
}

func addAddress(args []string) error {
	if len(args) < 3 || keyword(args, "dev") == "" {
		cli.Usage("ip", "addr add ADDR/PREFIX dev IFACE")
	}
	ip, network, err := net.ParseCIDR(args[0])
	if err != nil || ip.To4() == nil {
		return fmt.Errorf("%q is not an IPv4 ADDR/PREFIX", args[0])
	}
	name := keyword(args, "dev")
	request, err := ifreq(name)
	if err != nil {
		return err
	}
	putSockaddr(request, 16, ip)
	if err := ioctl(syscall.SIOCSIFADDR, request); err != nil {
		return fmt.Errorf("setting %s on %s: %w", ip, name, err)
	}
	request, _ = ifreq(name)
	putSockaddr(request, 16, net.IP(network.Mask))
	if err := ioctl(syscall.SIOCSIFNETMASK, request); err != nil {
		return fmt.Errorf("setting the netmask on %s: %w", name, err)
	}
	return nil
}

func setLink(args []string) error {
	name := deviceArg(args)
	rest := args
	if len(rest) > 0 && rest[0] == "dev" {
		rest = rest[1:]
	}
	if name == "" || len(rest) != 2 || (rest[1] != "up" && rest[1] != "down") {
		cli.Usage("ip", "link set [dev] IFACE up|down")
	}
	request, err := ifreq(name)
	if err != nil {
		return err
	}
	if err := ioctl(syscall.SIOCGIFFLAGS, request); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	flags := binary.LittleEndian.Uint16(request[16:])
	if rest[1] == "up" {
		flags |= syscall.IFF_UP
	} else {
		flags &^= syscall.IFF_UP
	}
	binary.LittleEndian.PutUint16(request[16:], flags)
	if err := ioctl(syscall.SIOCSIFFLAGS, request); err != nil {
		return fmt.Errorf("%s %s: %w", name, rest[1], err)
	}
	return nil
}

// struct rtentry on 64-bit Linux: pad(8) dst(16)@8 gateway(16)@24 genmask(16)@40 flags(2)@56 ...
// metric(2)@80 dev(char*)@88, 120 bytes in all.
const (
	rtentrySize = 120
	rtfUp       = 0x1
	rtfGateway  = 0x2
)

func addRoute(args []string) error {
	if len(args) == 0 {
		cli.Usage("ip", "route add default|NET/PREFIX [via GW] [dev IFACE]")
	}
	destination, mask := net.IPv4zero, net.IPMask(net.IPv4zero.To4())
	if args[0] != "default" {
		_, network, err := net.ParseCIDR(args[0])
		if err != nil || network.IP.To4() == nil {
			return fmt.Errorf("%q is not default or an IPv4 NET/PREFIX", args[0])
		}
		destination, mask = network.IP, network.Mask
	}
	entry := make([]byte, rtentrySize)
	putSockaddr(entry, 8, destination)
	putSockaddr(entry, 40, net.IP(mask))
	flags := uint16(rtfUp)
	if via := keyword(args, "via"); via != "" {
		gateway := net.ParseIP(via)
		if gateway == nil || gateway.To4() == nil {
			return fmt.Errorf("%q is not an IPv4 gateway", via)
		}
		putSockaddr(entry, 24, gateway)
		flags |= rtfGateway
	}
	binary.LittleEndian.PutUint16(entry[56:], flags)
	var device []byte
	if name := keyword(args, "dev"); name != "" {
		device = append([]byte(name), 0)
		binary.LittleEndian.PutUint64(entry[88:], uint64(uintptr(unsafe.Pointer(&device[0]))))
	}
	if flags&rtfGateway == 0 && device == nil {
		cli.Usage("ip", "route add default|NET/PREFIX [via GW] [dev IFACE]")
	}
	err := ioctl(syscall.SIOCADDRT, entry)
	runtime.KeepAlive(device)
	if errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("route %s exists already", args[0])
	}
	return err
}

// -- routes, from /proc/net/route ----------------------------------------------------------------------

func hexIP(field string) net.IP {
	value, _ := strconv.ParseUint(field, 16, 32)
	ip := make(net.IP, 4)
	binary.LittleEndian.PutUint32(ip, uint32(value))
	return ip
}

func showRoutes(args []string) error {
	onlyDefault := len(args) > 0 && args[0] == "default"
	file, err := os.Open("/proc/net/route")
	if err != nil {
		return err
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	scanner.Scan() // the header
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) < 8 {
			continue
		}
		destination, gateway, mask := hexIP(fields[1]), hexIP(fields[2]), hexIP(fields[7])
		flags, _ := strconv.ParseUint(fields[3], 16, 16)
		ones, _ := net.IPMask(mask).Size()
		isDefault := destination.Equal(net.IPv4zero) && ones == 0
		if onlyDefault && !isDefault {
			continue
		}
		target := fmt.Sprintf("%s/%d", destination, ones)
		if isDefault {
			target = "default"
		}
		line := target
		if flags&rtfGateway != 0 {
			line += " via " + gateway.String()
		}
		line += " dev " + fields[0]
		if flags&rtfGateway == 0 {
			line += " scope link"
		}
		if metric := fields[6]; metric != "0" {
			line += " metric " + metric
		}
		fmt.Println(line)
	}
	return scanner.Err()
}
