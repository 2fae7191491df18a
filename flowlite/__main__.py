"""Command line: ``python -m flowlite --help`` lists the jobs."""

from flowlite.jobs.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
