"""`autossl sweep`: Hydra's multirun syntax (key=a,b,c) expanded into one training run per combination."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from .config import compose
from .run import pretrain


def expand(overrides: list[str]) -> list[list[str]]:
    """Every combination of the sweep overrides, parsed with Hydra's own override grammar."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    axes = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([f"{key}={o.get_value_element_as_str()}"])
    return [list(combo) for combo in itertools.product(*axes)]


def run_name(base: str, combo: list[str], swept: set[str]) -> str:
    tags = [c.replace("/", "-") for c in combo if c.split("=", 1)[0] in swept]
    return base + ("/" + ",".join(tags) if tags else "")


def run_sweep(overrides: list[str]) -> list[dict]:
    combos = expand(overrides)
    swept = {o.split("=", 1)[0] for o in overrides if "," in o.split("=", 1)[-1]}
    results = []
    for i, combo in enumerate(combos, 1):
        cfg = compose(combo)
        cfg.name = run_name(str(cfg.name), combo, swept)
        print(f"[{i}/{len(combos)}] {cfg.name}")
        results.append({"overrides": combo, **pretrain(cfg)})
    out = Path(compose(combos[0]).checkpoint.dir) / "sweep.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return results
