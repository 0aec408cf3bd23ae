// ip lists network interfaces with their state, hardware address and addresses (like `ip -brief addr`).
package main

import (
	"fmt"
	"net"
	"strings"

	"bootmatrix.local/guest/internal/cli"
)

func main() {
	interfaces, err := net.Interfaces()
	if err != nil {
		cli.Fatal("ip", err)
	}
	for _, iface := range interfaces {
		state := "DOWN"
		if iface.Flags&net.FlagUp != 0 {
			state = "UP"
		}
		var addresses []string
		if addrs, err := iface.Addrs(); err == nil {
			for _, addr := range addrs {
				addresses = append(addresses, addr.String())
			}
		}
		fmt.Printf("%-10s %-5s %-17s %s\n", iface.Name, state, iface.HardwareAddr, strings.Join(addresses, " "))
	}
}
