"""Prompts as image models and image rewards see them (theory §12), and offline tokenizers for tiny random models.

``prompts_for_batch`` reads the text of any conditioning object with ``for_batch(n)`` and ``prompts`` (SD3's
``PromptEmbeddings``), a string or a list of strings. The tokenizers are built from in-memory vocabularies, so tiny
models and tiny rewards need no download (theory §12.1); transformers is imported only when one is built.
"""

from __future__ import annotations

from flowlite.errors import FlowliteError

CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 32
MAX_PROMPT_CHARS = 1000
"""Longer prompts are refused: the encoders read 77 (CLIP) or at most 512 (T5) tokens, and a megabyte-long line
spends minutes in a tokenizer before it is cut."""


def check_prompts(prompts) -> list[str]:
    """A non-empty list of strings of at most ``MAX_PROMPT_CHARS`` characters (a single string becomes a list of
    one)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts or [])
    if not prompts:
        raise FlowliteError("the prompt list is empty; give at least one prompt")
    if not all(isinstance(p, str) for p in prompts):
        raise FlowliteError("prompts must be strings")
    for i, prompt in enumerate(prompts):
        check_prompt_length(prompt, f"prompt {i}")
    return prompts


def check_prompt_length(prompt: str, where: str) -> str:
    if len(prompt) > MAX_PROMPT_CHARS:
        raise FlowliteError(f"{where} is {len(prompt)} characters long; prompts are limited to {MAX_PROMPT_CHARS}")
    return prompt


def prompts_for_batch(cond, n: int) -> list[str]:
    """The prompt text of each of n samples (rewards that read text: PickScore, CLIPScore)."""
    if hasattr(cond, "for_batch") and hasattr(cond, "prompts"):  # a model's conditioning, e.g. PromptEmbeddings
        return cond.for_batch(n).prompts
    if isinstance(cond, str):
        return [cond] * n
    if isinstance(cond, (list, tuple)) and cond and all(isinstance(p, str) for p in cond):
        if n % len(cond):
            raise FlowliteError(f"{len(cond)} prompts cannot be spread over a batch of {n}")
        return list(cond) * (n // len(cond))
    raise FlowliteError("this reward needs prompts: pass a model's prompt conditioning (e.g. PromptEmbeddings), a string or a list "
                        f"of strings as cond, got {type(cond).__name__}")


def _byte_characters() -> list[str]:
    """The 256 printable stand-ins GPT-2/CLIP byte-level BPE uses for the 256 bytes."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_clip_tokenizer():
    """CLIPTokenizer over single bytes (no merges): 514 tokens, <|startoftext|> = 0, <|endoftext|> = 1."""
    from transformers import CLIPTokenizer

    chars = _byte_characters()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(c, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_MAX_LENGTH)


def tiny_clip_text_config(hidden_size: int = 32, projection_dim: int = 32):
    """CLIP text config matching :func:`tiny_clip_tokenizer` (eos id = the tokenizer's <|endoftext|>)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=514, hidden_size=hidden_size, intermediate_size=37, num_attention_heads=4,
                          num_hidden_layers=2, max_position_embeddings=CLIP_MAX_LENGTH, projection_dim=projection_dim,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1)


def tiny_t5_tokenizer():
    """A Unigram T5 tokenizer over printable ASCII characters (no sentencepiece model needed)."""
    from transformers import T5Tokenizer

    chars = [chr(c) for c in range(33, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -3.0) for c in chars] + [("▁" + c, -3.5) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=T5_MAX_LENGTH)
