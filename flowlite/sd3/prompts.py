"""SD3's conditioning: ``PromptEmbeddings`` (the ``cond`` object) and ``PromptCache`` (encode once with the three text
encoders, then free them)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Sequence

import torch
from torch import Tensor

from flowlite.errors import FlowliteError
from flowlite.text import check_prompts


@dataclass
class PromptEmbeddings:
    """The ``cond`` object of SD3: text embeddings for a batch of prompts (negatives for CFG, may be None).

    ``prompt_embeds`` (B, L, D) and ``pooled`` (B, P) come from ``StableDiffusion3Pipeline.encode_prompt``.
    Methods stack states time-major (n·B, ...); :meth:`for_batch` tiles the embeddings to match.
    """

    prompt_embeds: Tensor
    pooled: Tensor
    negative_prompt_embeds: Tensor | None = None
    negative_pooled: Tensor | None = None
    prompts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]

    @property
    def has_negative(self) -> bool:
        return self.negative_prompt_embeds is not None

    def _map(self, fn) -> "PromptEmbeddings":
        changes = {f.name: fn(getattr(self, f.name)) for f in fields(self)
                   if torch.is_tensor(getattr(self, f.name))}
        return replace(self, **changes)

    def repeat_batch(self, times: int) -> "PromptEmbeddings":
        """The batch stacked ``times`` over itself (time-major), as ``flows.repeat_cond`` expects."""
        out = self._map(lambda x: x.repeat(times, *([1] * (x.ndim - 1))))
        out.prompts = list(self.prompts) * times
        return out

    def for_batch(self, n: int) -> "PromptEmbeddings":
        """Embeddings for a batch of n states: as is when n = B, tiled when n is a multiple of B."""
        b = len(self)
        if n == b:
            return self
        if n % b:
            raise FlowliteError(f"a batch of {n} states cannot use conditioning for {b} prompts "
                                "(the batch must be a multiple of the number of prompts)")
        return self.repeat_batch(n // b)

    def to(self, device=None, dtype=None) -> "PromptEmbeddings":
        return self._map(lambda x: x.to(device=device, dtype=dtype))


class PromptCache:
    """Encodes prompts with the pipeline's three text encoders once and keeps the rows, so the encoders can be freed
    (:meth:`free_text_encoders`) before training. ``negative_prompt`` (default "") is SD3's unconditional branch."""

    def __init__(self, pipe, max_sequence_length: int = 256, negative_prompt: str = "", chunk: int = 16):
        self.pipe = pipe
        self.chunk = chunk
        self.max_sequence_length = max_sequence_length
        self.negative_prompt = negative_prompt
        self._rows: dict[str, tuple[Tensor, ...]] = {}

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> None:
        if self.pipe.text_encoder is None:
            raise FlowliteError(f"prompts {prompts[:3]} are not cached and the text encoders were freed; "
                                "encode every prompt before free_text_encoders()")
        for start in range(0, len(prompts), self.chunk):  # chunks bound the text encoders' memory
            chunk = prompts[start:start + self.chunk]
            self._rows.update(zip(chunk, self._encode_chunk(chunk)))

    def _encode_chunk(self, chunk: list[str]) -> list[tuple]:
        """(prompt_embeds, pooled, negative_prompt_embeds, negative_pooled) per prompt, from SD3's three encoders."""
        pe, npe, ppe, nppe = self.pipe.encode_prompt(
            chunk, chunk, chunk, device=self.pipe.device, do_classifier_free_guidance=True,
            negative_prompt=[self.negative_prompt] * len(chunk), max_sequence_length=self.max_sequence_length)
        return [(pe[i], ppe[i], npe[i], nppe[i]) for i in range(len(chunk))]

    def __call__(self, prompts: str | Sequence[str]) -> PromptEmbeddings:
        """Embeddings for ``prompts`` (one row each, in order), encoding only the ones not seen before."""
        prompts = check_prompts(prompts)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._rows))
        if missing:
            self._encode(missing)
        rows = [self._rows[p] for p in prompts]
        pe, ppe, npe, nppe = (torch.stack(col) if col[0] is not None else None for col in zip(*rows))
        return PromptEmbeddings(pe, ppe, npe, nppe, prompts=list(prompts))

    def free_text_encoders(self) -> None:
        """Drop the three text encoders from the pipeline (their memory is freed; cached prompts still work)."""
        for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            if hasattr(self.pipe, name):
                setattr(self.pipe, name, None)
