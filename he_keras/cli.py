"""How the command-line apps end on invalid input: one `error:` line, exit status 2.

`run(main)` is `absl.app.run` under that contract for everything a user can
get wrong: flag parsing (an unknown flag, a value that does not parse, a
missing required flag, an unreadable flagfile), positional arguments,
`ValueError` (how the library reports invalid values, files, models and
data) and `he_keras.backends.BackendError` (a Keras backend other than
TensorFlow). Each becomes one line on stderr, `error: <message>`, and exit
status 2, with no traceback (the apps check their input before compute, so
these come before it; a `ValueError` raised later is reported the same way);
any other exception is a bug and keeps its traceback.

Example:

```python
from he_keras import cli

def main() -> None:
    ...  # read the flags, raise ValueError on a bad value, then compute

if __name__ == "__main__":
    cli.run(main)
```
"""

from __future__ import annotations

import sys
from typing import Callable, NoReturn

from absl import app, flags

from he_keras.backends import BackendError

EXIT_INVALID = 2


def fail(message: str) -> NoReturn:
    """Prints `error: <message>` on stderr and exits with `EXIT_INVALID`.

    Args:
        message: What is wrong, naming the value.
    """
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_INVALID)


def parse_flags(argv: list[str]) -> list[str]:
    """Parses `argv` into `absl.flags.FLAGS`; a parsing error ends the program (`fail`).

    Args:
        argv: The command line, program name first.

    Returns:
        The arguments left after the flags, program name first.
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        fail(str(err))


def run(main: Callable[[], None]) -> NoReturn:
    """Runs `main` as an absl program whose invalid input ends in one `error:` line.

    Args:
        main: The program, reading its flags from `absl.flags.FLAGS`.
    """

    def guarded(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}")
        try:
            main()
        except (ValueError, BackendError) as err:
            fail(str(err))

    app.run(guarded, flags_parser=parse_flags)
