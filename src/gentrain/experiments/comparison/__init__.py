"""The parts of ``gentrain-compare`` (the CLI is ``gentrain.cli.compare``), one concern each:
``arms`` (the spec and the planned runs), ``checks`` (every config validated before
anything trains), ``state`` (``compare.json`` and its lock), ``runner`` (the runs as child
processes). The report is ``gentrain.experiments.report``.
"""
