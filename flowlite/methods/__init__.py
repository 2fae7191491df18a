"""Fine-tuning methods, one file each, all driven by ``flowlite.train.train`` through ``finetune``.

``METHODS`` maps the command-line name of each method to its class; later methods register here.
"""

from flowlite.methods.base import Method
from flowlite.methods.reward_backprop import DRaFT, ReFL

METHODS: dict[str, type[Method]] = {
    "refl": ReFL,
    "draft": DRaFT,
}

__all__ = ["Method", "ReFL", "DRaFT", "METHODS"]
