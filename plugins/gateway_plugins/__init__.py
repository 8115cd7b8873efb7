"""The gateway's built-in plugins, loaded through entry points like anyone else's.

Each plugin is a module (``gateway_plugins.cors``) or, for a family of modules, a
package (``gateway_plugins.ratelimit``).  They import only ``gateway.api`` from the
engine, as a third-party plugin would.
"""
