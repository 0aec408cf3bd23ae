package tinyboot

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Lease is what a DHCP server gave one NIC.
type Lease struct {
	Interface string
	Address   net.IP
	Mask      net.IPMask
	Router    net.IP
	DNS       []net.IP
	Server    net.IP
	Seconds   uint32
}

func (l Lease) String() string {
	ones, _ := l.Mask.Size()
	dns := make([]string, len(l.DNS))
	for i, ip := range l.DNS {
		dns[i] = ip.String()
	}
	return fmt.Sprintf("%s: lease %s/%d router %v dns %s from %v for %d s", l.Interface, l.Address, ones,
		l.Router, strings.Join(dns, ","), l.Server, l.Seconds)
}

// Leases returns the leases PID 1 took at boot, one line each, as it printed them: read from
// /run/tinyboot/leases, which PID 1 writes before it starts the app.
func Leases() []string {
	data, err := os.ReadFile(leaseFile)
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

const leaseFile = "/run/tinyboot/leases"

const (
	dhcpDiscover = 1
	dhcpOffer    = 2
	dhcpRequest  = 3
	dhcpAck      = 5
	dhcpNak      = 6
)

// configureNetwork brings every Ethernet NIC up and runs DHCP on all of them at once. The default
// route goes through the first NIC (by name) whose lease names a router. Leases are not renewed: the
// app's machine lives for the tests' minutes, well inside QEMU's 24 h leases.
func configureNetwork() {
	interfaces, err := net.Interfaces()
	if err != nil {
		Logf("network: %v", err)
		return
	}
	var (
		wait     sync.WaitGroup
		leasesMu sync.Mutex
		leases   []Lease
	)
	for _, nic := range interfaces {
		if nic.Flags&net.FlagLoopback != 0 || len(nic.HardwareAddr) != 6 {
			continue
		}
		wait.Add(1)
		go func(nic net.Interface) {
			defer wait.Done()
			if err := linkUp(nic.Name); err != nil {
				Logf("%s: link up: %v", nic.Name, err)
				return
			}
			lease, err := dhcp(nic)
			if err != nil {
				Logf("%s: DHCP: %v", nic.Name, err)
				return
			}
			if err := setAddress(nic.Name, lease.Address, lease.Mask); err != nil {
				Logf("%s: setting %s: %v", nic.Name, lease.Address, err)
				return
			}
			leasesMu.Lock()
			leases = append(leases, lease)
			leasesMu.Unlock()
		}(nic)
	}
	wait.Wait()
	sort.Slice(leases, func(i, j int) bool { return leases[i].Interface < leases[j].Interface })
	var lines, resolv []string
	routed := ""
	for _, lease := range leases {
		line := lease.String()
		if routed == "" && lease.Router != nil {
			if err := addDefaultRoute(lease.Interface, lease.Router); err != nil {
				Logf("%s: default route via %s: %v", lease.Interface, lease.Router, err)
			} else {
				routed = lease.Interface
				line += " (default route)"
				for _, ip := range lease.DNS {
					resolv = append(resolv, "nameserver "+ip.String())
				}
			}
		}
		Logf("%s", line)
		lines = append(lines, line)
	}
	_ = os.MkdirAll("/run/tinyboot", 0o755)
	_ = os.WriteFile(leaseFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	_ = os.MkdirAll("/etc", 0o755)
	_ = os.WriteFile("/etc/resolv.conf", []byte(strings.Join(resolv, "\n")+"\n"), 0o644)
}

// dhcp runs DISCOVER/OFFER/REQUEST/ACK on one NIC over a UDP socket bound to it: the kernel sends to
// and receives from 255.255.255.255 on an interface without an address when the socket names the
// device, so no packet socket is needed.
func dhcp(nic net.Interface) (Lease, error) {
	config := net.ListenConfig{Control: func(_, _ string, raw syscall.RawConn) error {
		var optionErr error
		err := raw.Control(func(fd uintptr) {
			optionErr = errors.Join(
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1),
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1),
				syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, nic.Name))
		})
		return errors.Join(err, optionErr)
	}}
	conn, err := config.ListenPacket(context.Background(), "udp4", "0.0.0.0:68")
	if err != nil {
		return Lease{}, err
	}
	defer conn.Close()
	var xid [4]byte
	_, _ = rand.Read(xid[:])
	server := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	exchange := func(message []byte, want byte) ([]byte, error) {
		for attempt := 0; attempt < 5; attempt++ {
			if _, err := conn.WriteTo(message, server); err != nil {
				return nil, err
			}
			_ = conn.SetReadDeadline(time.Now().Add(time.Duration(1+attempt) * time.Second))
			for {
				reply := make([]byte, 1500)
				n, _, err := conn.ReadFrom(reply)
				if err != nil {
					break // timeout: send again
				}
				reply = reply[:n]
				if n < 240 || reply[0] != 2 || string(reply[4:8]) != string(xid[:]) {
					continue
				}
				kind := options(reply)[53]
				if len(kind) == 1 && kind[0] == dhcpNak {
					return nil, errors.New("server said NAK")
				}
				if len(kind) == 1 && kind[0] == want {
					return reply, nil
				}
			}
		}
		return nil, errors.New("no answer from a DHCP server")
	}
	offer, err := exchange(message(nic.HardwareAddr, xid, dhcpDiscover, nil, nil), dhcpOffer)
	if err != nil {
		return Lease{}, fmt.Errorf("discover: %w", err)
	}
	offered := net.IP(offer[16:20])
	ack, err := exchange(message(nic.HardwareAddr, xid, dhcpRequest, offered, options(offer)[54]), dhcpAck)
	if err != nil {
		return Lease{}, fmt.Errorf("request %s: %w", offered, err)
	}
	return leaseOf(nic.Name, ack), nil
}

func message(mac net.HardwareAddr, xid [4]byte, kind byte, requested net.IP, serverID []byte) []byte {
	m := make([]byte, 240, 300)
	m[0], m[1], m[2] = 1, 1, 6 // BOOTREQUEST, Ethernet, 6-byte address
	copy(m[4:8], xid[:])
	binary.BigEndian.PutUint16(m[10:], 0x8000) // broadcast replies: we have no address yet
	copy(m[28:34], mac)
	copy(m[236:240], []byte{99, 130, 83, 99})
	m = append(m, 53, 1, kind)
	m = append(m, 61, 7, 1)
	m = append(m, mac...)
	m = append(m, 55, 4, 1, 3, 6, 51) // subnet mask, router, DNS, lease time
	if requested != nil {
		m = append(m, 50, 4)
		m = append(m, requested.To4()...)
	}
	if len(serverID) == 4 {
		m = append(m, 54, 4)
		m = append(m, serverID...)
	}
	return append(m, 255)
}

func options(packet []byte) map[byte][]byte {
	found := map[byte][]byte{}
	for i := 240; i < len(packet); {
		code := packet[i]
		if code == 255 {
			break
		}
		if code == 0 || i+1 >= len(packet) {
			i++
			continue
		}
		size := int(packet[i+1])
		if i+2+size > len(packet) {
			break
		}
		found[code] = packet[i+2 : i+2+size]
		i += 2 + size
	}
	return found
}

func leaseOf(name string, ack []byte) Lease {
	o := options(ack)
	lease := Lease{Interface: name, Address: net.IP(append([]byte(nil), ack[16:20]...)), Mask: net.CIDRMask(24, 32)}
	if len(o[1]) == 4 {
		lease.Mask = net.IPMask(o[1])
	}
	if len(o[3]) >= 4 {
		lease.Router = net.IP(o[3][:4])
	}
	for i := 0; i+4 <= len(o[6]); i += 4 {
		lease.DNS = append(lease.DNS, net.IP(o[6][i:i+4]))
	}
	if len(o[54]) == 4 {
		lease.Server = net.IP(o[54])
	}
	if len(o[51]) == 4 {
		lease.Seconds = binary.BigEndian.Uint32(o[51])
	}
	return lease
}
