"""fp16 packages against NeMo fp32 on a held-out manifest: decisions agreed and every difference's margin.

    uv run python training/fp16_agreement.py --model sentences --packages DIR [--manifest M.json]

DIR is an fp16 export of the model (`parakeet-coreml convert --model sentences --precision fp16`); the
manifest defaults to the model's full held-out set under <cache>/<model>-data/test_manifest.json. Per
clip, NeMo's modules and the packages run the same greedy loop (the file alone, as NeMo transcribe()
does); decisions are compared up to the first difference, where NeMo's own top-2 margin is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from exporters.audio import load_audio  # noqa: E402
from exporters.checkpoints import cache_dir, load_model  # noqa: E402
from exporters.contract import contract_for_model  # noqa: E402
from exporters.decoding.divergence import first_divergence, recording  # noqa: E402
from exporters.decoding.transcriber import open_transcriber  # noqa: E402
from exporters.reference import nemo_transcriber  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sentences")
    parser.add_argument("--packages", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, default=None)
    args = parser.parse_args()
    manifest = args.manifest or cache_dir() / f"{args.model}-data" / "test_manifest.json"
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    model = load_model(args.model)
    contract = contract_for_model(model)
    agreed = total = 0
    for row in rows:
        samples = load_audio(row["audio_filepath"], contract.model.sample_rate)
        reference = recording(nemo_transcriber(model, contract))
        package = recording(open_transcriber(args.packages, "mil"))
        reference.transcribe(samples)
        package.transcribe(samples)
        divergence = first_divergence(package, reference)
        total += len(reference.log)
        agreed += len(reference.log) if divergence is None else divergence.index
        if divergence is not None:
            print(f"{Path(row['audio_filepath']).name}: decision {divergence.index} of {len(reference.log)} "
                  f"(frame {divergence.frame}, {divergence.flipped}) differs; NeMo margin {divergence.margin:.3e}")
    print(f"{args.model}: fp16 agrees with NeMo fp32 on {agreed} of {total} decisions over {len(rows)} clips")


if __name__ == "__main__":
    main()
