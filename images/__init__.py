"""From Debian packages to bootable artifacts: store, fetchers, packers, recipes, guest-side sources.

Knows nothing of the matrix; a recipe that needs a running VM gets one passed in.
"""
