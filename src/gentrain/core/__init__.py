"""The low level every layer uses: the typed config and registries, errors, paths,
atomic checkpoint files, devices and seeds, ranks, child processes."""
