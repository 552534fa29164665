"""Which knowledge-base chunk answers a question? Max-passage scoring against the chunk alone.

    .venv/bin/python bench/kb_passages.py [--bot examples/support] [--questions bench/data/kb_questions.tsv]
                                          [--offtopic bench/data/kb_offtopic.txt]

The bot's latest packaged model (``<bot>/models/<newest>``, the one ``switchboard serve`` loads) embeds each
question as served (the NLU's sentence embedding). A chunk is right when it contains the question's expected
phrase (second column of the questions file). For weights w from 0 to 1, a chunk's score is
``w * similarity(chunk) + (1 - w) * max similarity(its sentences)``; printed: right chunks picked per weight, the
served weight (bots/answers/retrieval.py ``_CHUNK_WEIGHT``, through the selector's own scoring), and the best
score off-topic questions get against the in-scope questions' scores, the bot's ``kb_min_similarity`` (an
off-topic question above it would be answered from the knowledge base) and ``kb_override_similarity`` (the bar
for a passage to replace an intent's template under ``answer: knowledge``).

The inputs ship in bench/data/ (written for the example bot's kb/: returns, membership, support hours, pick-up,
gift cards, payments, invoices, shipping). Deterministic: one run is the figure. Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bots.answers import retrieval  # noqa: E402
from bots.answers.retrieval import AnswerSelector  # noqa: E402
from bots.nlu.model import OnnxNLU  # noqa: E402


def _read(path: Path, columns: int) -> list[list[str]]:
    if not path.exists():
        sys.exit(f"{path}: not found (it ships in bench/data/; give another file with --questions/--offtopic)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != columns:
            sys.exit(f"{path}:{n}: expected {columns} tab-separated column(s), got {len(parts)}")
        rows.append(parts)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bot", type=Path, default=ROOT / "examples" / "support")
    parser.add_argument("--questions", type=Path, default=ROOT / "bench" / "data" / "kb_questions.tsv")
    parser.add_argument("--offtopic", type=Path, default=ROOT / "bench" / "data" / "kb_offtopic.txt")
    args = parser.parse_args()
    models = sorted(p for p in (args.bot / "models").glob("*/") if p.is_dir()) if (args.bot / "models").is_dir() else []
    if not models:
        sys.exit(f"{args.bot}/models: no packaged model; train it first (switchboard train {args.bot})")
    artifact = models[-1]
    nlu = OnnxNLU.load(artifact)
    selector = AnswerSelector.load(artifact, nlu, load_generator=False)
    if selector is None or not selector.chunks:
        sys.exit(f"{artifact}: the bot has no knowledge base (kb/)")
    questions = _read(args.questions, 2)
    offtopic = [r[0] for r in _read(args.offtopic, 1)]

    def vectors(texts: list[str]) -> np.ndarray:
        embeddings = [u.embedding for u in nlu.predict(texts)]
        if any(e is None for e in embeddings):
            sys.exit(f"{artifact}: the NLU gives no sentence embedding; this bench reads the served one")
        return np.stack([e for e in embeddings if e is not None])

    qv, ov = vectors([q for q, _ in questions]), vectors(offtopic)
    right = [{i for i, c in enumerate(selector.chunks) if want.lower() in c["text"].lower()} for _, want in questions]
    for (q, want), r in zip(questions, right, strict=True):
        if not r:
            sys.exit(f"{args.questions}: no chunk of {artifact} contains {want!r} (for {q!r})")

    print(f"model {artifact.name}: {len(selector.chunks)} chunks, {len(selector.sentence_vectors)} sentences; "
          f"{len(questions)} questions, {len(offtopic)} off-topic")
    print(f"{'chunk weight':>12}  right chunk")
    for w in (0.0, 0.25, 0.5, 0.75, 1.0):
        good = sum(int(np.argmax(selector._chunk_scores(v, w)[0])) in r for v, r in zip(qv, right, strict=True))
        print(f"{w:>12.2f}  {good}/{len(questions)}")
    served = [selector._chunk_scores(v)[0] for v in qv]
    good = sum(int(np.argmax(s)) in r for s, r in zip(served, right, strict=True))
    print(f"served (weight {retrieval._CHUNK_WEIGHT}): {good}/{len(questions)} right; wrong: "
          + "; ".join(q for (q, _), s, r in zip(questions, served, right, strict=True) if int(np.argmax(s)) not in r))
    floor = float(selector.config.get("kb_min_similarity", 0.35))
    best_in = sorted(float(s.max()) for s in served)
    best_off = sorted(float(selector._chunk_scores(v)[0].max()) for v in ov)
    print(f"best chunk score, in scope: min {best_in[0]:.2f}, median {best_in[len(best_in) // 2]:.2f}; off-topic: "
          f"median {best_off[len(best_off) // 2]:.2f}, max {best_off[-1]:.2f}; kb_min_similarity {floor}: "
          f"{sum(s >= floor for s in best_off)}/{len(offtopic)} off-topic and "
          f"{sum(s < floor for s in best_in)}/{len(questions)} in-scope on the wrong side")
    override = float(selector.config.get("kb_override_similarity", 0.45))
    print(f"kb_override_similarity {override} (answer: knowledge, a passage instead of the intent's template): "
          f"{sum(s >= override for s in best_off)}/{len(offtopic)} off-topic and "
          f"{sum(s >= override for s in best_in)}/{len(questions)} in-scope at or above it")


if __name__ == "__main__":
    main()
