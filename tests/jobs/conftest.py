"""Fixtures of the jobs' tests."""

from types import SimpleNamespace

import pytest

from flowlite.jobs.cli import main


@pytest.fixture
def run(capsys):
    """Run the command line in-process (imports once); returns returncode, stdout, stderr like subprocess."""

    def _run(*args):
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return _run
