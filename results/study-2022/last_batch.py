"""Does a short last minibatch make a batch size worse on 189 spots? F1's side question, read from the
committed summaries of starmap-189 and starmap-189-last-batch alone.

    .venv/bin/python results/study-2022/last_batch.py     # prints the table (markdown), quoted in the README

On 189 spots batch 12 and the rule's 18 were the worst, and each epoch of both ends in a minibatch of 9
spots. One row per batch size run there: the spots of that last minibatch (189 mod batch, or a whole batch
where it divides 189) and the excitatory-layer PCC of destVI (mean +- sd over seeds) per amortization.
"""

from __future__ import annotations

import pandas as pd
from findings import _batch_key, layers, load, text

SPOTS = 189
RULE_BATCH = min(SPOTS // 10, 128)
"""What starmap-189's `auto` trained with: the study's rule, min(n_spots / 10, 128)."""


def last_minibatch(batch: int) -> int:
    return SPOTS % batch or batch


def table() -> str:
    summaries = [summary for summary in (load("starmap-189"), load("starmap-189-last-batch")) if summary is not None]
    pcc = pd.concat([layers(summary) for summary in summaries])
    batches = sorted({batch for _, batch in pcc.index}, key=lambda b: _batch_key(str(RULE_BATCH) if b == "auto" else b))
    lines = [
        "| batch | last minibatch (spots) | both | latent |",
        "| --- | --- | --- | --- |",
    ]
    for batch in batches:
        size = RULE_BATCH if batch == "auto" else int(batch)
        label = f"{size} (`auto`)" if batch == "auto" else batch
        cells = [text(pcc, (amortization, batch)) for amortization in ("both", "latent")]
        lines.append(f"| {label} | {last_minibatch(size)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
