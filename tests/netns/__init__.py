"""Programs the MTU tests run inside a network namespace of their own (``unshare -n``)."""
