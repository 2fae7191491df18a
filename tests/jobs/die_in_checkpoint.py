"""Run ``python -m flowlite ARGS`` and kill -9 this process half-way through writing the Nth checkpoint's weights.

    python tests/jobs/die_in_checkpoint.py N ARGS...

The Nth call of the checkpoint writer's ``save_file`` writes ``model.safetensors`` in full, cuts it to half its
bytes (what a kill during the write leaves on disk) and sends SIGKILL to its own process: a deterministic moment inside
the atomic write, which the random-moment kill test can only hit by chance.
"""

import os
import signal
import sys
from pathlib import Path

import flowlite.checkpoint as checkpoint
from flowlite.jobs.cli import main


def dying_at(nth: int):
    real = checkpoint.save_file
    calls = [0]

    def save_file(tensors, filename, *args, **kwargs):
        real(tensors, filename, *args, **kwargs)
        calls[0] += 1
        if calls[0] == nth:
            path = Path(filename)
            with path.open("r+b") as f:
                f.truncate(path.stat().st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)

    return save_file


if __name__ == "__main__":
    checkpoint.save_file = dying_at(int(sys.argv[1]))
    raise SystemExit(main(sys.argv[2:]))
