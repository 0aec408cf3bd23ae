"""Debian packages: mirror discovery, private apt, lock file, verified downloads, safe extraction."""
