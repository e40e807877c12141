"""The `pefty` command: parse options, load the config, call one library function, print a summary.

Errors the user can act on (PeftyError) become one line with the cause and a hint; the traceback
is shown only with --debug. Only this package talks to the terminal. Each module registers its
commands on the one group (`main`), in pipeline order: prepare, label, rounds, compare, deploy,
demo.
"""

from pefty_whisper.cli import compare, demo, deploy, label, prepare, rounds  # noqa: F401, E402
from pefty_whisper.cli.group import main

__all__ = ["main"]
