"""Benchmark: wired M-Bus frames decoded per second, against pyMeterBus.

    python benchmarks/bench_decode.py [--frames 1000000] [--baseline-frames 50000] [--repeat 3]

Frames: the 50 libmbus test frames (``tests/corpora/mbus-libmbus/test-frames``) repeated to
``--frames``. Figures (median of ``--repeat`` runs):

* ``decode_response`` over all ``--frames`` (frame checks, header, every record with its exact
  Decimal value, unit and quantity);
* the same-run baseline: ``meterbus.load`` (pyMeterBus) plus reading each record's value, unit
  and function, on the frames pyMeterBus can decode (48 of 50), repeated to
  ``--baseline-frames``; and ours on exactly that mix, for the ratio.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_rate  # noqa: E402

from meterline.protocols.mbus.frame import decode_response, parse_hex  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpora" / "mbus-libmbus" / "test-frames"


def repeat_to(frames: list[bytes], n: int) -> list[bytes]:
    return list(itertools.islice(itertools.cycle(frames), n))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--baseline-frames", type=int, default=50_000, help="frames for the pyMeterBus comparison")
    p.add_argument("--repeat", type=int, default=3, help="measurements per figure; the median is reported")
    p.add_argument("--corpus", type=Path, default=CORPUS)
    args = p.parse_args()
    corpus = [parse_hex(f.read_text()) for f in sorted(args.corpus.glob("*.hex"))]
    if not corpus:
        sys.exit(f"no frames in {args.corpus}")
    records = sum(len(decode_response(f).records) for f in corpus)
    print(f"corpus: {len(corpus)} frames, {records} records; decoding {args.frames:,} frames", flush=True)

    frames = repeat_to(corpus, args.frames)

    def ours_all() -> None:
        for f in frames:
            decode_response(f)

    median_rate("decode_response (all corpus frames)", len(frames), ours_all, args.repeat)

    import meterbus  # pyMeterBus

    def pymeterbus(frame: bytes) -> None:
        t = meterbus.load(frame)
        for r in t.records:
            r.value, r.unit, r.function  # noqa: B018 - what a caller reads

    decodable = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in corpus:
            try:
                pymeterbus(f)
                decodable.append(f)
            except Exception:  # noqa: BLE001 - pyMeterBus raises assorted errors on what it cannot decode
                pass
    mix = repeat_to(decodable, min(args.baseline_frames, args.frames))
    print(f"pyMeterBus decodes {len(decodable)} of {len(corpus)} frames; comparing on {len(mix):,} of those",
          flush=True)

    def ours_mix() -> None:
        for f in mix:
            decode_response(f)

    def theirs_mix() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for f in mix:
                pymeterbus(f)

    ours = median_rate("decode_response (pyMeterBus-decodable mix)", len(mix), ours_mix, args.repeat)
    theirs = median_rate("pyMeterBus load + records (same mix)", len(mix), theirs_mix, args.repeat)
    print(f"ratio: decode_response is {ours / theirs:,.1f}x pyMeterBus's rate on the same frames")


if __name__ == "__main__":
    main()
