"""Command-line helpers shared by the scripts: --help that shows the defaults, which flags were typed, number checks."""

import argparse
import copy
import os
import sys


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout and appends "(default: ...)" to every flag that has a real default;
    a flag whose default is worked out at run time (None) or a switch (False) says so in its own help."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def given_flags(parser, argv):
    """{dest: value} for the flags on the command line only, so that they can win over defaults that come from
    elsewhere (a preset, --quickstart, a checkpoint's saved settings)."""
    quiet = copy.deepcopy(parser)  # the same flags with every default suppressed: only what was typed is set
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return vars(quiet.parse_args(argv))


def apply_defaults(args, defaults, given):
    """Set every value of defaults on args, except for the flags given on the command line: those win."""
    for key, value in defaults.items():
        if key not in given:
            setattr(args, key, value)


def positive_int(text):
    """argparse type for counts that must be at least 1 (batch sizes, steps, ...)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def non_negative_int(text):
    """argparse type for sizes and intervals where 0 means off."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or positive, not {value}")
    return value


def positive_float(text):
    """argparse type for rates and limits that must be above 0 (a learning rate of 0 trains nothing)."""
    value = float(text)
    if not value > 0:  # nan too
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def non_negative_float(text):
    """argparse type for rates where 0 means none (weight decay, a final learning rate)."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or positive, not {text}")
    return value


def progress(iterable=None, enabled=True, **kwargs):
    """A tqdm progress bar for long work, silent under CI=true and when stderr is not a terminal (a log file)."""
    from tqdm import tqdm

    quiet = not enabled or os.environ.get("CI", "").lower() == "true" or not sys.stderr.isatty()
    return tqdm(iterable, disable=quiet, **kwargs)


def convert_command(description, source_help, target_help, convert, argv=None):
    """A command line of the form `python -m gptkit.X SOURCE TARGET`: convert(source, target) does the work and
    returns what to print; an error is one line and exit status 1."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    parser.add_argument("source", help=source_help)
    parser.add_argument("target", help=target_help)
    args = parser.parse_args(argv)
    try:
        print(convert(args.source, args.target))
    except (ValueError, OSError) as e:  # OSError: a missing file, a full disk
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
