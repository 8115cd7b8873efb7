"""The gateway's built-in plugins, one module each, loaded through entry points."""
