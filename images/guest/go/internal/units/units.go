// Package units formats byte counts the way df and free print them: in KiB, MiB, bytes, or
// human-readable (1.5G).
package units

import "fmt"

// Format turns a byte count into a column value; Header names the column.
type Format struct {
	Header string
	Of     func(bytes uint64) string
}

var (
	Bytes = Format{"bytes", func(b uint64) string { return fmt.Sprint(b) }}
	KiB   = Format{"1K-blocks", func(b uint64) string { return fmt.Sprint(b / 1024) }}
	MiB   = Format{"1M-blocks", func(b uint64) string { return fmt.Sprint(b / (1024 * 1024)) }}
	Human = Format{"Size", human}
)

func human(b uint64) string {
	const suffixes = "KMGTPE"
	if b < 1024 {
		return fmt.Sprintf("%dB", b)
	}
	value, index := float64(b)/1024, 0
	for value >= 1024 && index < len(suffixes)-1 {
		value /= 1024
		index++
	}
	if value < 10 {
		return fmt.Sprintf("%.1f%c", value, suffixes[index])
	}
	return fmt.Sprintf("%.0f%c", value, suffixes[index])
}
