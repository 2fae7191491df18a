"""Library warnings a user cannot act on, silenced at their source (installed by ``import flowlite``).

transformers without torchvision says, once per class, that ``SiglipImageProcessor`` and ``CLIPImageProcessor`` fall
back to their PIL versions when diffusers imports them. flowlite never uses those processors (its image rewards
preprocess in torch), so the lines only bury the one line that matters, e.g. an ``error:``. torchao
(``--quantize-base int8``) says the same kind of thing about CUDA kernels a CPU build lacks, about loading
torchao-serialised files (flowlite never does) and about its enums. A filter on the logger that emits them drops
exactly those messages; transformers itself is not imported here.
"""

from __future__ import annotations

import logging

NOISE = ("requires torchvision (not installed); falling back to",
         "Failed to load",  # torchao on a CPU-only torch: its CUDA kernel libraries (flowlite uses none of them)
         "Unable to import `torchao` Tensor objects",  # for torchao-serialised checkpoints, which flowlite never reads
         "is an Enum subclass and is now natively supported")  # torchao registering its enums with torch.compile
SOURCES = ("transformers.utils.import_utils", "torchao", "diffusers.quantizers.torchao.torchao_quantizer",
           "torch.utils._pytree")


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


def hide_library_progress_bars() -> None:
    """``--quiet``: also no bars from diffusers (loading a pipeline) and transformers (loading and writing weights).
    Imports both, so only a job that already uses them calls it."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
