"""The `cmb` command: one sub-command per module in this package.

Each sub-command module defines ``add_parser(subparsers)`` (returns its parser) and
``run(args) -> int``.  User errors (CMBError) print one line and exit 2; no traceback.
"""
import argparse
import importlib
import sys

from ..errors import CMBError

# Sub-commands, in the order `cmb --help` lists them.  A module that is not present
# (a part not installed yet) is skipped.
COMMANDS = ["demo", "grow", "detect", "compare", "worker", "models", "evaluate", "benchmark", "locate", "export",
            "import_study",
            "synth", "report"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="cmb", description="Cerebral microbleed tools (CMBLib).")
    parser.add_argument("--version", action="version", version=f"cmb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except CMBError as exc:
        print(f"cmb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cmb {args.command}: cancelled", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"cmb {args.command}: error: out of memory", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
