"""The top: axes, arch x firmware profiles, matrix files, the pytest plugin, the CLI, reports."""
