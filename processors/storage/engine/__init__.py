"""The embedded engine in its own sandboxed process (the engine host), and the link
ept's processes reach it through."""
