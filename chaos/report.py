"""The report of a chaos run: ``write_report(run_dir, result, out_dir)``
writes ``<YYYY-MM-DD>-<seed>.md``, ``.json`` and ``.png`` into ``out_dir``,
dated by the run's start (``config.json`` ``started_at``, in UTC).

The markdown holds the verdict and a summary table, the availability of each
fault episode, the fault list and the nemeses skipped with their reasons. The
PNG is a timeline: each node's faults as shaded bands, every operation as a
dot (writes and reads on their own rows, coloured ok / fail / info) and the
p50 / p99 latency per time bucket.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on a CI box or in a namespace
import matplotlib.pyplot as plt  # noqa: E402

from chaos.checker import CONSISTENCY_LEVELS, LOG_FINDINGS, CheckResult  # noqa: E402
from chaos.history import Operation, read_operations  # noqa: E402

__all__ = ["report_stem", "write_report"]

OUTCOME_COLOURS: Final = {"ok": "tab:green", "fail": "tab:red", "info": "tab:orange"}
FAULT_COLOUR: Final = "tab:purple"
POINTS_PLOTTED_MAX: Final = 200_000


def report_stem(config: dict[str, Any]) -> str:
    """``<YYYY-MM-DD>-<seed>`` of the run's start (UTC)."""
    started = datetime.datetime.fromtimestamp(float(config.get("started_at", 0.0)), tz=datetime.UTC)
    return f"{started:%Y-%m-%d}-{config.get('seed', 0)}"


def write_report(run_dir: Path, result: CheckResult, out_dir: Path) -> tuple[Path, Path, Path]:
    """Write the md, json and png reports of the run in ``run_dir``; their paths."""
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    faults = [fault for fault in _faults(run_dir) if "skipped" not in fault]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = report_stem(config)
    markdown, document, image = (out_dir / f"{stem}.{suffix}" for suffix in ("md", "json", "png"))
    markdown.write_text(_markdown(config, result, faults, image.name), encoding="utf-8")
    body = {"run_id": config.get("run_id"), "seed": config.get("seed"), "started_at": config.get("started_at"),
            "faults": faults, **result.to_dict()}
    document.write_text(json.dumps(body, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    _timeline(read_operations(run_dir / "history.jsonl"), faults, result, config, image)
    assert markdown.stat().st_size > 0
    assert image.stat().st_size > 0
    return markdown, document, image


def _faults(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "faults.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _markdown(config: dict[str, Any], result: CheckResult, faults: list[dict[str, Any]], image_name: str) -> str:
    verdict = "PASSED" if result.passed else "FAILED"
    lines = [f"# Chaos run {config.get('run_id')} (seed {config.get('seed')}): {verdict}", "",
             f"![timeline]({image_name})", "", "| check | result |", "|---|---|", f"| verdict | **{verdict}** |",
             f"| lost acknowledged writes | {result.lost_count} ({len(result.lost_adds)} set ids, "
             f"{len(result.lost_registers)} register versions) |",
             f"| resurrected deletes | {len(result.resurrected)} |"]
    for level in CONSISTENCY_LEVELS:
        stale = result.stale[level]
        lines.append(f"| stale reads at `{level}` | {stale.count} of {stale.reads} (lag max "
                     f"{stale.lag_s_max:.2f} s){' — allowed' if level == 'default' else ''} |")
    divergence = "; ".join(result.divergence["reasons"]) or "none"
    lines += [f"| phantom reads | {len(result.phantom)} |", f"| divergence | {divergence} |",
              f"| converged after heal | {_seconds(result.divergence['converged_after_s'])} s |",
              f"| final reads failed | {', '.join(sorted(result.final_errors)) or 'none'} |",
              f"| Raft log conflicts (applied entries replaced) | {result.raft_conflicts} |"]
    lines += ["", "## Operations", "", "| function | ok | fail | info |", "|---|---|---|---|"]
    lines += [f"| {name} | {counts['ok']} | {counts['fail']} | {counts['info']} |"
              for name, counts in sorted(result.totals.items())]
    lines += ["", "## Availability per fault", "",
              "| round | fault | targets | duration s | longest write gap s | writes failing until s | "
              "longest write wait s | longest read gap s | reads ok (1 retry) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in result.availability:
        rate = "—" if row["read_success_rate"] is None else \
            f"{100 * row['read_success_rate']:.2f} % of {row['reads']}"
        lines.append(f"| {row['round']} | {row['fault']} | {row['targets']} | {row['end'] - row['start']:.1f} | "
                     f"{row['write_gap_s']:.2f} | {row['writes_failing_s']:.2f} | {row['write_wait_s_max']:.2f} | {row['read_gap_s']:.2f} | "
                     f"{rate} |")
    lines += ["", "## Faults", ""]
    lines += [f"- round {fault.get('round')}: {fault.get('fault')} on {fault.get('targets')} "
              f"({fault.get('target_kind')}), {float(fault['end']) - float(fault['start']):.1f} s, "
              f"{json.dumps(fault.get('detail', {}), sort_keys=True)}" for fault in faults] or ["- none"]
    lines += ["", "## Node logs", "", "| node | " + " | ".join(LOG_FINDINGS) + " |",
              "|---|" + "---|" * len(LOG_FINDINGS)]
    lines += [f"| {node} | " + " | ".join(str(counts.get(name, 0)) for name in LOG_FINDINGS) + " |"
              for node, counts in sorted(result.log_findings.items())] or ["| none | " + "| " * len(LOG_FINDINGS)]
    lines += ["", "## Skipped nemeses", ""]
    lines += [f"- {fault['skipped']}: {fault.get('reason')}" for fault in result.skipped_faults] or ["- none"]
    lines += _anomaly_examples(result)
    return "\n".join(lines) + "\n"


def _anomaly_examples(result: CheckResult) -> list[str]:
    """A few examples of each anomaly found, as JSON lines."""
    sections = [("Lost set ids", result.lost_adds), ("Lost register versions", result.lost_registers),
                ("Resurrected deletes", result.resurrected), ("Phantom reads", result.phantom)]
    sections += [(f"Stale reads at `{level}`", result.stale[level].examples) for level in CONSISTENCY_LEVELS]
    lines: list[str] = []
    for title, examples in sections:
        if examples:
            lines += ["", f"## {title} (examples)", "", "```"]
            lines += [json.dumps(example, sort_keys=True, default=str) for example in examples[:10]]
            lines += ["```"]
    return lines


def _timeline(operations_: list[Operation], faults: list[dict[str, Any]], result: CheckResult,
              config: dict[str, Any], image: Path) -> None:
    """Faults as bands per node, operations as dots, latency as lines."""
    origin = min([op.scheduled for op in operations_] + [float(f["start"]) for f in faults]
                 or [float(config.get("started_at", 0.0))])
    node_ids = sorted({int(node["id"]) for node in config.get("nodes", [])} |
                      {int(target) for fault in faults for target in fault.get("targets") or []})
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(14, 6), height_ratios=[2, 1])
    for row, node_id in enumerate(node_ids):
        for fault in faults:
            if node_id in (fault.get("targets") or []):
                top.axvspan(float(fault["start"]) - origin, float(fault["end"]) - origin,
                            ymin=row / (len(node_ids) + 2), ymax=(row + 1) / (len(node_ids) + 2),
                            color=FAULT_COLOUR, alpha=0.3)
    _operation_dots(top, operations_[:POINTS_PLOTTED_MAX], origin, base_row=len(node_ids))
    top.set_ylim(0, len(node_ids) + 2)
    top.set_yticks([row + 0.5 for row in range(len(node_ids) + 2)],
                   [f"n{node_id} faults" for node_id in node_ids] + ["writes", "reads"])
    top.set_title(f"chaos run {config.get('run_id')} seed {config.get('seed')}: "
                  f"{'PASSED' if result.passed else 'FAILED'}")
    starts = [row["start"] - origin for row in result.latency]
    for name, style in (("p50_s", "-"), ("p99_s", "--")):
        values = [math.nan if row[name] is None else row[name] * 1000 for row in result.latency]
        bottom.plot(starts, values, style, label=name.removesuffix("_s"), drawstyle="steps-post")
    bottom.set_ylabel("latency ms (ok ops)")
    bottom.set_xlabel("seconds since the first operation")
    bottom.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(image, dpi=100)
    plt.close(figure)


def _operation_dots(axes: Any, operations_: list[Operation], origin: float, *, base_row: int) -> None:
    """One dot per operation at its completion (or its invoke when it has none)."""
    for outcome, colour in OUTCOME_COLOURS.items():
        chosen = [op for op in operations_ if op.outcome == outcome]
        times = [(op.completed if math.isfinite(op.completed) else op.invoked) - origin for op in chosen]
        rows = [base_row + (0.5 if op.is_write else 1.5) + (op.op_id % 7 - 3) * 0.05 for op in chosen]
        axes.scatter(times, rows, s=4, c=colour, label=outcome, linewidths=0)
    axes.legend(loc="upper right", markerscale=3)
