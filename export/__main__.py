"""`python -m export` is the same as the `bert-export` console script."""

from export.cli.export_cli import run

if __name__ == "__main__":
    run()
