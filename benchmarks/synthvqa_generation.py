"""Time to generate the default synthvqa benchmark from scratch, and to find it again (JSON out).

python benchmarks/synthvqa_generation.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from mmcompress.config import load_config
from mmcompress.data.synthvqa import generate
from mmcompress.data.world import world_spec


def main() -> None:
    spec = world_spec(load_config([]))
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        path = generate(spec, Path(root))
        first = time.perf_counter() - start
        start = time.perf_counter()
        generate(spec, Path(root))
        again = time.perf_counter() - start
        images = sum(1 for _ in (path / "images").rglob("*.png"))
    print(
        json.dumps(
            {
                "benchmark": "synthvqa_generation",
                "images": images,
                "generate_s": round(first, 2),
                "reuse_s": round(again, 4),
                "target_s": 30,
            }
        )
    )


if __name__ == "__main__":
    main()
