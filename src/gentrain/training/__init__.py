"""One run: the loop (``trainer``), resume and warm start, optimisers, and the services the
loop hooks in (data parallel, precision and compile, runaway watch, run lock)."""
