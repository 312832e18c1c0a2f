"""Concept tokens: one new text token `[V*]` per defect type (`<stain>`, `<oil>`, ...).

Each token is added to the CLIP tokenizer, its embedding row initialised from a given word (the
type name when it is one known token, else "defect") and trained. The text encoder's whole
embedding matrix must require grad for that row to learn, so the textual-inversion trick of
diffusers' `examples/textual_inversion/textual_inversion.py` keeps every other row exactly as it
was: `EmbeddingRowGuard.restore()` copies the saved rows back after each optimiser step (weight
decay and Adam moments would otherwise drift the rows of "a", "photo", ... that appear in the
prompts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from defectfill.errors import ConfigError

DEFAULT_INITIALIZER_WORD = "defect"
_TYPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def default_token(defect_type: str) -> str:
    """The concept token of a defect type unless the user names one: `<stain>`."""
    return f"<{defect_type}>"


def check_defect_type_name(defect_type: str, where: str = "defect_types") -> str:
    """Defect type names become file names (`learned_embeds-<type>.safetensors`): keep them plain."""
    if not isinstance(defect_type, str) or not _TYPE_NAME.match(defect_type) or defect_type == "good":
        raise ConfigError(
            f"{where}: defect type {defect_type!r} is not a usable name; use letters, digits, '_', '-', '.' "
            f"(e.g. 'broken_end'), and not 'good' (the defect-free class)"
        )
    return defect_type


def single_token_id(tokenizer, word: str) -> int | None:
    """The id of `word` when the tokenizer encodes it as exactly one token, else None."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def initializer_word_for(tokenizer, defect_type: str, given: str | None = None) -> str:
    """The word whose embedding seeds a concept: `given`, else the type name if it is one token
    (e.g. "stain", "hole", "oil"), else "defect"."""
    if given:
        return given
    word = defect_type.replace("_", " ").replace("-", " ")
    return word if single_token_id(tokenizer, word) is not None else DEFAULT_INITIALIZER_WORD


@dataclass
class ConceptTokens:
    """The concepts of one model: defect type -> token string and token id, plus the seed words."""

    tokens: dict[str, str]
    token_ids: dict[str, int]
    initializer_words: dict[str, str]

    @property
    def ids(self) -> list[int]:
        return [self.token_ids[t] for t in self.tokens]


def add_concept_tokens(
    tokenizer,
    text_encoder,
    concepts: dict[str, str],
    initializer_words: dict[str, str] | None = None,
) -> ConceptTokens:
    """Add one token per defect type and seed its embedding row from a word.

    concepts: defect type -> token (e.g. {"stain": "<stain>"}).
    initializer_words: defect type -> seed word; a word of several BPE tokens is seeded with the
        mean of their embeddings. Missing types use `initializer_word_for`.
    Raises ConfigError when a token is already in the vocabulary or is split by the tokenizer.
    """
    initializer_words = dict(initializer_words or {})
    unknown = sorted(set(initializer_words) - set(concepts))
    if unknown:
        raise ConfigError(
            f"initializer_words: defect type(s) {unknown} are not trained (trained: {sorted(concepts)}); "
            f"remove them or add the types to defect_types"
        )
    vocab = tokenizer.get_vocab()
    seen: set[str] = set()
    for defect_type, token in concepts.items():
        check_defect_type_name(defect_type, "concept_tokens")
        if token in vocab:
            raise ConfigError(
                f"concept_tokens: token {token!r} of defect type {defect_type!r} is already in the tokenizer "
                f"vocabulary (id {vocab[token]}); choose a new token such as '<{defect_type}-defect>'"
            )
        if token in seen:
            raise ConfigError(f"concept_tokens: token {token!r} is used for two defect types; give each its own")
        seen.add(token)
    words = {t: initializer_word_for(tokenizer, t, initializer_words.get(t)) for t in concepts}
    seed_ids: dict[str, list[int]] = {}
    for defect_type, word in words.items():
        ids = tokenizer.encode(word, add_special_tokens=False)
        if not ids:
            raise ConfigError(f"initializer_words.{defect_type}: {word!r} encodes to no token; give a real word")
        seed_ids[defect_type] = ids

    added = tokenizer.add_tokens(list(concepts.values()))
    if added != len(concepts):  # pragma: no cover - guarded by the vocabulary check above
        raise ConfigError(f"tokenizer added {added} of {len(concepts)} concept tokens {list(concepts.values())}")
    token_ids = {t: tokenizer.convert_tokens_to_ids(tok) for t, tok in concepts.items()}
    for defect_type, token in concepts.items():
        encoded = tokenizer.encode(f"a {token} b", add_special_tokens=False)
        if token_ids[defect_type] not in encoded:  # pragma: no cover - depends on the tokenizer
            raise ConfigError(f"concept_tokens: the tokenizer splits {token!r}; use a token like '<{defect_type}>'")

    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for defect_type, ids in seed_ids.items():
            weight[token_ids[defect_type]] = weight[ids].mean(dim=0)
    return ConceptTokens(dict(concepts), token_ids, words)


def concept_token_positions(input_ids: torch.Tensor, concept_ids: list[int]) -> torch.Tensor:
    """(B, L) token ids -> (B,) index of the first concept token in each prompt.

    Raises ConfigError when a prompt holds no concept token (a prompt template without {token}).
    """
    is_concept = torch.isin(input_ids, torch.as_tensor(concept_ids, device=input_ids.device))
    if not bool(is_concept.any(dim=1).all()):
        raise ConfigError(
            "prompt: a training prompt holds no concept token; the prompt templates must contain '{token}'"
        )
    return is_concept.int().argmax(dim=1)


class EmbeddingRowGuard:
    """Keeps every embedding row except the concept rows bit-identical (textual-inversion trick).

    Call `restore()` after every optimiser step. The copy costs one embedding matrix of memory
    (200 MB for SD-2's 49,408 x 1,024 in fp32).
    """

    def __init__(self, embedding: torch.nn.Embedding, trainable_ids: list[int]):
        self.embedding = embedding
        self.original = embedding.weight.detach().clone()
        self.frozen_rows = torch.ones(self.original.shape[0], dtype=torch.bool, device=self.original.device)
        self.frozen_rows[torch.as_tensor(trainable_ids, dtype=torch.long)] = False

    @torch.no_grad()
    def restore(self) -> None:
        weight = self.embedding.weight
        weight[self.frozen_rows] = self.original[self.frozen_rows].to(weight.dtype)

    def to(self, device) -> EmbeddingRowGuard:
        self.original = self.original.to(device)
        self.frozen_rows = self.frozen_rows.to(device)
        return self


def concept_embeddings(text_encoder, tokens: ConceptTokens) -> dict[str, torch.Tensor]:
    """token string -> its embedding row (dim,), fp32, detached, on the CPU."""
    weight = text_encoder.get_input_embeddings().weight
    return {
        tokens.tokens[t]: weight[tokens.token_ids[t]].detach().float().cpu().clone() for t in tokens.tokens
    }
