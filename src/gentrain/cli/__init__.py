"""The commands (``gentrain``, ``gentrain-eval``, ``gentrain-sample``, ``gentrain-compare``):
argument parsing, exit codes and wiring. Nothing imports them but ``__main__``."""
