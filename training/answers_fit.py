"""Fitting a bot's answers at training time: the retrieval index always, and the generation model
when ``answers.generation`` is configured.

This is the one module that ties the answer pieces together: ``training/answers.py`` (the index
and the question→answer pairs, imported by everything below), ``training/generator.py`` (the
generator and its gate) and ``training/answers_eval.py`` (scoring both answer paths). None of them
imports this module or each other in a circle (tests/test_import_contract.py checks the graph).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from bots.botspec import BotSpec
from training.answers import AnswerIndex, Encoder, QAPair, build_index, parse_answers_config, write_index
from training.generator import fit_generation


def fit_answers(bot: BotSpec, artifact_dir: Path, encoder: Encoder, *, extra_pairs: Sequence[QAPair] = (),
                log: Callable[[str], None] = print) -> AnswerIndex:
    """Build and write the answer index for ``bot`` into ``artifact_dir/responses``; with
    ``answers.generation`` configured, also train the generator and compare it with retrieval
    (``encoder`` must then be the served NLU model, which also classifies the answers). With
    ``answers.generation.endpoint`` a server writes the answers: nothing is trained for them."""
    cfg = parse_answers_config(bot)
    index = build_index(bot, cfg, extra_pairs=extra_pairs)
    out = write_index(index, encoder, artifact_dir)
    log(f"answers: {len(index.templates)} templates from {len(index.questions)} questions, "
        f"{len(index.chunks)} knowledge-base chunks → {out}")
    if cfg.generation is not None and cfg.generation.endpoint is not None:
        log(f"answers: generation by the endpoint {cfg.generation.endpoint.url} (model "
            f"{cfg.generation.endpoint.model}); nothing to train")
    elif cfg.generation is not None:
        fit_generation(bot, cfg, index, artifact_dir, encoder, extra_pairs=extra_pairs, log=log)
    return index
