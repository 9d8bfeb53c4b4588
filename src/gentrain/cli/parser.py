"""``--help`` of the commands: the module docstring, read as a user reads it.

The first paragraph becomes the description, one sentence wrapped to the terminal; the
rest (examples, notes) follows the options unwrapped, so command lines stay copyable.
RST markup (````name````) is dropped.
"""

from __future__ import annotations

import argparse
import shutil
import textwrap


def command_parser(prog: str, doc: str | None, epilog: str = "") -> argparse.ArgumentParser:
    text = textwrap.dedent((doc or "").replace("``", "")).strip()
    first, _, rest = text.partition("\n\n")
    width = min(shutil.get_terminal_size().columns, 100) - 2
    description = textwrap.fill(" ".join(first.split()), width)
    notes = textwrap.dedent(rest).strip()
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="\n\n".join(p for p in (notes, epilog) if p),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
