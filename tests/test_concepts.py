"""Concept tokens: added and seeded from a word; only their rows train; base weights stay frozen."""

from __future__ import annotations

import pytest
import torch
from helpers_defectfill_training import single_torch_thread, tiny_step_setup  # noqa: F401

from defectfill.errors import ConfigError
from defectfill.losses import LossWeights
from defectfill.models.components import build_clip_tokenizer, get_dummy_components
from defectfill.models.concepts import (
    add_concept_tokens,
    check_defect_type_name,
    concept_token_positions,
    initializer_word_for,
)
from defectfill.training.step import defectfill_step

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_tokens_added_and_rows_seeded_from_words():
    c = get_dummy_components()
    tokenizer, text_encoder = c["tokenizer"], c["text_encoder"]
    vocab_size = len(tokenizer)
    weight = text_encoder.get_input_embeddings().weight
    stain_id = tokenizer.encode("stain", add_special_tokens=False)
    defect_id = tokenizer.encode("defect", add_special_tokens=False)
    oil_ids = tokenizer.encode("oil spot", add_special_tokens=False)
    expected = {"stain": weight[stain_id[0]].clone(), "broken_end": weight[defect_id[0]].clone(),
                "oil": weight[oil_ids].mean(0).clone()}
    tokens = add_concept_tokens(tokenizer, text_encoder, {"stain": "<stain>", "broken_end": "<broken_end>",
                                                          "oil": "<oil>"}, {"oil": "oil spot"})
    assert tokens.initializer_words == {"stain": "stain", "broken_end": "defect", "oil": "oil spot"}
    assert sorted(tokens.ids) == [vocab_size, vocab_size + 1, vocab_size + 2]
    new_weight = text_encoder.get_input_embeddings().weight
    assert new_weight.shape[0] == vocab_size + 3
    for defect_type, vector in expected.items():
        assert torch.equal(new_weight[tokens.token_ids[defect_type]], vector)
    ids = tokenizer(["A photo of <oil>", "A fabric with <stain>"], padding="max_length", max_length=77,
                    return_tensors="pt").input_ids
    assert concept_token_positions(ids, tokens.ids).tolist() == [4, 4]


def test_token_already_in_vocabulary_is_refused():
    c = get_dummy_components()
    with pytest.raises(ConfigError, match="'photo'.*already in the tokenizer vocabulary"):
        add_concept_tokens(c["tokenizer"], c["text_encoder"], {"stain": "photo"})
    with pytest.raises(ConfigError, match="used for two defect types"):
        add_concept_tokens(c["tokenizer"], c["text_encoder"], {"stain": "<x>", "oil": "<x>"})


def test_prompt_without_concept_token_and_bad_type_names_are_refused():
    tokenizer = build_clip_tokenizer()
    ids = tokenizer(["A photo of fabric"], return_tensors="pt").input_ids
    with pytest.raises(ConfigError, match="holds no concept token"):
        concept_token_positions(ids, [49408])
    for bad in ("good", "a/b", "", "two words"):
        with pytest.raises(ConfigError):
            check_defect_type_name(bad)
    assert initializer_word_for(tokenizer, "hole") == "hole"
    assert initializer_word_for(tokenizer, "metal_contamination") == "defect"


def test_training_changes_only_lora_and_concept_rows():
    """Three optimiser steps: LoRA and the concept rows move; every other weight is bit-identical."""
    models, tokens, guard, _, batch = tiny_step_setup(train_text_encoder=True)
    modules = {"unet": models.unet, "vae": models.vae, "text_encoder": models.text_encoder}
    before = {f"{k}.{n}": p.detach().clone() for k, m in modules.items() for n, p in m.named_parameters()}
    embedding = models.text_encoder.get_input_embeddings().weight
    trainable = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    assert any(p is embedding for p in trainable)
    assert not any(p.requires_grad for p in models.vae.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    for step in range(3):
        optimizer.zero_grad()
        defectfill_step(models.unet, models.vae, models.text_encoder, models.noise_scheduler, batch, tokens.ids,
                        weights=LossWeights(), object_alpha=0.3, generator=torch.Generator().manual_seed(step),
                        backward=lambda loss: loss.backward())
        optimizer.step()
        guard.restore()
    changed_lora, unchanged_base = [], []
    for name, old in before.items():
        module_name, param_name = name.split(".", 1)
        new = dict(modules[module_name].named_parameters())[param_name]
        if "lora_" in param_name:
            changed_lora.append(not torch.equal(new, old))
        elif param_name.endswith("token_embedding.weight"):
            rows = torch.ones(new.shape[0], dtype=torch.bool)
            rows[tokens.ids] = False
            assert torch.equal(new[rows], old[rows]), "a non-concept embedding row changed"
            for token_id in tokens.ids:
                assert not torch.equal(new[token_id], old[token_id]), "a concept row did not train"
        else:
            unchanged_base.append(torch.equal(new, old))
    assert changed_lora and all(changed_lora), "every LoRA matrix must have moved"
    assert unchanged_base and all(unchanged_base), "a frozen base weight changed"


def test_without_row_guard_other_rows_drift():
    """The guard is what keeps the other rows: AdamW's weight decay moves them otherwise."""
    models, tokens, _, _, batch = tiny_step_setup(train_text_encoder=False)
    embedding = models.text_encoder.get_input_embeddings().weight
    old = embedding.detach().clone()
    optimizer = torch.optim.AdamW([embedding], lr=1e-2, weight_decay=1e-2)
    defectfill_step(models.unet, models.vae, models.text_encoder, models.noise_scheduler, batch, tokens.ids,
                    weights=LossWeights(), object_alpha=0.3, generator=torch.Generator().manual_seed(0),
                    backward=lambda loss: loss.backward())
    optimizer.step()
    rows = torch.ones(old.shape[0], dtype=torch.bool)
    rows[tokens.ids] = False
    assert not torch.equal(embedding.detach()[rows], old[rows])
