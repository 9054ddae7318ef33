"""The harness records CPU steal per load run and names figures taken under it."""

from __future__ import annotations

from bench.metrics import cpu_ticks, steal_percent
from bench.report import _stolen


def test_steal_percent_is_the_stolen_share_of_the_interval() -> None:
    assert steal_percent((100, 10_000), (150, 11_000)) == 5.0
    assert steal_percent((100, 10_000), (100, 10_000)) == 0.0  # no time passed
    steal, total = cpu_ticks()
    assert 0 <= steal <= total and total > 0  # Linux: /proc/stat


def test_figures_taken_under_steal_are_named() -> None:
    result = {"sweep": [{"ef": 16, "steal_pct": 0.4}, {"ef": 64, "steal_pct": 12.5}],
              "concurrent": {"steal_pct": 6.0}, "batched": {"steal_pct": 5.0},
              "filtered": [{"label": "name ~10%", "steal_pct": 30.0}, {"label": "year ~1%"}]}
    assert _stolen(result) == ["ef 64 12.5 %", "concurrent 6 %", "name ~10% 30 %"]
    assert _stolen({"sweep": [], "concurrent": None}) == []
