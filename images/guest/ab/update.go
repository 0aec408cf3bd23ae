package ab

// The update: fetch a slot image from the payload server, stream it to the inactive slot, check its
// sha256 as written and its verity tree through the kernel, then install a counted entry for it. The
// order is what makes a cut at any write safe: the inactive slot's old entries go before its first
// byte is overwritten, and the new entry appears (atomically, by rename) only once the slot checks.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

const EntriesDir = "/efi/loader/entries"

// Manifest is the payload server's manifest.json: what slot.img must be.
type Manifest struct {
	Version string `json:"version"`
	Size    int64  `json:"size"`
	Sha256  string `json:"sha256"`
	Verity  string `json:"verity"`
}

// Say prints one state of the agent on the console, where the tests read it.
func Say(state string, format string, args ...any) {
	fmt.Printf("ab-agent: %s %s\n", state, fmt.Sprintf(format, args...))
}

var client = &http.Client{Timeout: 120 * time.Second}

func fetchManifest(base string) (Manifest, error) {
	var m Manifest
	response, err := client.Get(base + "/manifest.json")
	if err != nil {
		return m, err
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		return m, fmt.Errorf("manifest.json: HTTP %d", response.StatusCode)
	}
	if err := json.NewDecoder(response.Body).Decode(&m); err != nil {
		return m, fmt.Errorf("manifest.json: %w", err)
	}
	if m.Size <= 0 || len(m.Sha256) != 64 {
		return m, errors.New("manifest.json: no size or sha256")
	}
	return m, nil
}

// download streams slot.img to device once; an interrupted transfer is an error the caller retries
// from the start (the partition is not bootable until the entry exists, so a restart loses nothing).
func download(url, device string, m Manifest) error {
	response, err := client.Get(url)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", response.StatusCode)
	}
	out, err := os.OpenFile(device, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	digest := sha256.New()
	written, err := io.Copy(io.MultiWriter(out, digest), io.LimitReader(response.Body, m.Size+1))
	if err == nil && written != m.Size {
		err = fmt.Errorf("got %d bytes of %d", written, m.Size)
	}
	if err == nil {
		err = out.Sync()
	}
	if closeErr := out.Close(); err == nil {
		err = closeErr
	}
	if err == nil && hex.EncodeToString(digest.Sum(nil)) != m.Sha256 {
		err = errors.New("the downloaded bytes' sha256 differs from the manifest's")
	}
	return err
}

func hashOf(device string, size int64) (string, error) {
	in, err := os.Open(device)
	if err != nil {
		return "", err
	}
	defer in.Close()
	var digest hash.Hash = sha256.New()
	if _, err := io.CopyN(digest, in, size); err != nil {
		return "", err
	}
	return hex.EncodeToString(digest.Sum(nil)), nil
}

// CheckVerity maps device with v and reads every data block through dm-verity: any block that does not
// hash to the tree, or a tree that does not hash to the root, is an I/O error.
func CheckVerity(name, device string, v Verity) error {
	mapped, err := OpenVerity(name, device, v)
	if err != nil {
		return err
	}
	defer CloseVerity(name)
	in, err := os.Open(mapped)
	if err != nil {
		return err
	}
	defer in.Close()
	read, err := io.Copy(io.Discard, in)
	if err != nil {
		return fmt.Errorf("dm-verity refused %s after %d bytes: %w", device, read, err)
	}
	return nil
}

// Update installs the payload at base into the inactive slot and returns the new entry's file name.
func Update(base string, tries int) (string, error) {
	booted, err := ReadBooted()
	if err != nil {
		return "", err
	}
	target := Other(booted.Slot)
	device := SlotDevice(target)
	m, err := fetchManifest(base)
	if err != nil {
		return "", err
	}
	verity, err := ParseVerity(m.Verity)
	if err != nil {
		return "", err
	}
	Say("manifest", "version %s, %d bytes, for slot %s (%s)", m.Version, m.Size, target, device)
	removed, err := Remove(EntriesDir, target)
	if err != nil {
		return "", fmt.Errorf("removing slot %s's entries: %w", target, err)
	}
	Say("entries-removed", "%v", removed)
	for attempt := 1; ; attempt++ {
		Say("download", "attempt %d", attempt)
		err = download(base+"/slot.img", device, m)
		if err == nil {
			break
		}
		Say("download-failed", "attempt %d: %v", attempt, err)
		if attempt == 3 {
			return "", fmt.Errorf("download: %w", err)
		}
		time.Sleep(time.Second)
	}
	Say("written", "%d bytes to %s", m.Size, device)
	sum, err := hashOf(device, m.Size)
	if err != nil || sum != m.Sha256 {
		return "", fmt.Errorf("slot %s reads back with sha256 %s, not %s (%v)", target, sum, m.Sha256, err)
	}
	Say("verified-sha256", "%s", sum)
	if err := CheckVerity("ab-check", device, verity); err != nil {
		return "", err
	}
	Say("verified-verity", "root hash %s", verity.RootHash)
	entries, err := Entries(EntriesDir)
	if err != nil {
		return "", err
	}
	generation, options := 1, ""
	for _, entry := range entries {
		generation = max(generation, entry.Generation+1)
		if entry.ID == booted.Entry {
			options = entry.Options
		}
	}
	if options == "" {
		return "", fmt.Errorf("the booted entry %s is not in %s", booted.Entry, EntriesDir)
	}
	id := fmt.Sprintf("ab-%d", generation)
	text := EntryText(generation, m.Version, WithSlot(options, target, id, verity))
	name, err := WriteNew(EntriesDir, generation, text, tries)
	if err != nil {
		return "", err
	}
	Say("installed", "%s", filepath.Join(EntriesDir, name))
	return name, nil
}
