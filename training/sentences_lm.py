"""A token trigram of the sentences model, from its training corpus, for custom-vocabulary fusion (ARPA).

    uv run python training/sentences_lm.py OUT.arpa

The sentences are those training/make_sentences_data.py trains on (drawn after its 200 test sentences), minus
any held-out fixture text; exporters/decoding/token_lm.py writes the ARPA over the model's token ids.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporters.audio import FIXTURE_AUDIO_DIR  # noqa: E402
from exporters.decoding.token_lm import token_arpa  # noqa: E402
from sentence_corpus import distinct_sentences  # noqa: E402

SENTENCES_SEED = 20261126  # make_sentences_data.SEED: its first 200 sentences are the test split
TEST_SENTENCES = 200
LM_SENTENCES = 4000


def write_sentences_lm(path: Path, tokenizer) -> Path:
    """The trigram over `tokenizer`'s ids (NeMo's tokenizer of the sentences model), written to `path`."""
    held_out = {clip["text"] for clip in json.loads((FIXTURE_AUDIO_DIR / "sentences" / "transcripts.json")
                                                     .read_text())["clips"].values()}
    drawn = distinct_sentences(TEST_SENTENCES + LM_SENTENCES, SENTENCES_SEED)[TEST_SENTENCES:]
    texts = [text for text in drawn if text not in held_out]
    path.write_text(token_arpa([tokenizer.text_to_ids(text) for text in texts], tokenizer.vocab_size, order=3))
    return path


if __name__ == "__main__":
    from exporters.checkpoints import load_model

    write_sentences_lm(Path(sys.argv[1]), load_model("sentences").tokenizer)
