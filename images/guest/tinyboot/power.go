package tinyboot

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Linux input events: struct input_event is a timeval (16 bytes on 64-bit arches), then type, code
// (u16 each) and value (s32).
const (
	inputEventSize = 24
	evKey          = 1
	keyPower       = 116
)

// watchPowerButtons reads every input device that appears under /dev/input and turns a KEY_POWER
// press into a power-off request. Devices are looked for again every second: the button drivers bind
// asynchronously, after the modules are loaded.
func watchPowerButtons(requests chan<- request) {
	watched := map[string]bool{}
	for {
		events, _ := filepath.Glob("/dev/input/event*")
		for _, device := range events {
			if watched[device] {
				continue
			}
			watched[device] = true
			go readButton(device, requests)
		}
		time.Sleep(time.Second)
	}
}

func readButton(device string, requests chan<- request) {
	file, err := os.Open(device)
	if err != nil {
		Logf("%s: %v", device, err)
		return
	}
	defer file.Close()
	name := deviceName(device)
	Logf("listening for the power button on %s (%s)", device, name)
	event := make([]byte, inputEventSize)
	for {
		if _, err := file.Read(event); err != nil {
			Logf("%s: %v", device, err)
			return
		}
		kind := binary.NativeEndian.Uint16(event[16:])
		code := binary.NativeEndian.Uint16(event[18:])
		value := int32(binary.NativeEndian.Uint32(event[20:]))
		if kind == evKey && code == keyPower && value == 1 {
			requests <- request{poweroff: true, source: "power button (KEY_POWER from " + name + ")"}
		}
	}
}

func deviceName(device string) string {
	data, err := os.ReadFile(filepath.Join("/sys/class/input", filepath.Base(device), "device/name"))
	if err != nil {
		return filepath.Base(device)
	}
	return strings.TrimSpace(string(data))
}
