"""Library warnings a user cannot act on, silenced at their source (installed by ``import flowlite``).

transformers without torchvision says, once per class, that ``SiglipImageProcessor`` and ``CLIPImageProcessor`` fall
back to their PIL versions when diffusers imports them. flowlite never uses those processors (its image rewards
preprocess in torch), so the lines only bury the one line that matters, e.g. an ``error:``. A filter on the logger
that emits them drops exactly those messages; transformers itself is not imported here.
"""

from __future__ import annotations

import logging

NOISE = ("requires torchvision (not installed); falling back to",)
SOURCES = ("transformers.utils.import_utils",)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(part in message for part in NOISE)


def install() -> None:
    """Add the filter once to each source logger (idempotent)."""
    for name in SOURCES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
