"""The default adapter shipped in the package: loads offline, embeds as its model card says."""

from __future__ import annotations

import json

import pytest

from egtlm_core.loading.sources import PACKAGED_ADAPTER

pytestmark = pytest.mark.slow

shipped = pytest.mark.skipif(
    not (PACKAGED_ADAPTER / "adapter_config.json").is_file(), reason="no adapter is shipped in this checkout"
)


@shipped
def test_default_is_the_adapter_with_its_saved_settings(default_lm) -> None:
    assert default_lm.source.kind == "peft"
    from dataclasses import fields

    from egtlm_core import EgtLMConfig

    saved = json.loads((PACKAGED_ADAPTER / "egtlm_config.json").read_text(encoding="utf-8"))
    settings = {f.name for f in fields(EgtLMConfig)} & set(saved)
    assert settings, saved
    for name in settings:
        assert getattr(default_lm.config, name) == saved[name], name


@shipped
def test_stsb_dev_matches_the_model_card(shared_data, default_lm) -> None:
    """The selected step's score (300 seeded STS-B dev pairs), within 0.01, after float16 LoRA
    factors were merged into the packaged weights. Selection skips steps whose generation fell, so
    the selected score need not be the run's highest."""
    from egtlm_core.evaluation import evaluate_sts, read_stsb, subsample
    from egtlm_core.training.trainer import sts_dev

    selection = json.loads((PACKAGED_ADAPTER / "selection.json").read_text(encoding="utf-8"))
    history = json.loads((PACKAGED_ADAPTER / "training_log.json").read_text(encoding="utf-8"))
    card = next(h["stsb_dev"] for h in history if h["step"] == selection["best_step"] and "stsb_dev" in h)
    assert card == pytest.approx(selection["best_stsb_dev"])
    settings = json.loads((PACKAGED_ADAPTER / "train_config.json").read_text(encoding="utf-8"))
    dev = subsample(read_stsb("dev"), settings["eval_pairs"], seed=settings["seed"])
    assert abs(sts_dev(default_lm, dev) - card) <= 0.01
    # ... and through the call a user types first: `EgtLM().encode(texts)` is the same vectors
    assert evaluate_sts(default_lm, dev, side="plain")["spearman"] == pytest.approx(sts_dev(default_lm, dev))


def test_the_untrained_base_stays_available_by_name() -> None:
    from egtlm_core import EgtLM

    base = EgtLM("egtlm:base")
    assert base.source.kind != "peft" and base.config.document_context == "instruction"
