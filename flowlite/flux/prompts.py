"""FLUX's conditioning: T5 token states and CLIP's pooled embedding, encoded once (theory §12)."""

from __future__ import annotations

from flowlite.sd3.prompts import PromptCache


class FluxPromptCache(PromptCache):
    """``PromptCache`` over ``FluxPipeline.encode_prompt``: ``prompt_embeds`` from T5, ``pooled`` from CLIP, no
    negative branch (FLUX.1-dev is guidance-distilled; the guidance scale enters the transformer instead)."""

    def _encode_chunk(self, chunk: list[str]) -> list[tuple]:
        pe, pooled, _ = self.pipe.encode_prompt(chunk, chunk, device=self.pipe.device,
                                                max_sequence_length=self.max_sequence_length)
        return [(pe[i], pooled[i], None, None) for i in range(len(chunk))]
