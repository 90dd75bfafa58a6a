"""Claims tables as plain text (terminal) and Markdown (report.md, README)."""

from __future__ import annotations

from typing import Any, Sequence


def format_value(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}g}"


def measured_text(claim: dict[str, Any]) -> str:
    """`mean ± std (n=3)` or the single value; for reduce="all" the worst seed is named."""
    if claim.get("measured") is None:
        return "missing"
    if claim.get("n", 1) > 1:
        text = f"{format_value(claim['mean'])} ± {format_value(claim['std'], 2)} (n={claim['n']})"
        if claim.get("reduce") == "all":
            text += f", worst {format_value(claim['measured'])}"
        return text
    return format_value(claim["measured"])


def verdict(claim: dict[str, Any]) -> str:
    """PASS, FAIL, or RETIRED (a retired claim is measured and shown but does not judge the run)."""
    if claim.get("retired"):
        return "RETIRED"
    return "PASS" if claim["passed"] else "FAIL"


def held_text(claims: Sequence[dict[str, Any]]) -> str:
    """'held/judged' over the claims that judge the run, and how many retired ones are shown beside them."""
    judged = [c for c in claims if not c.get("retired")]
    text = f"{sum(c['passed'] for c in judged)}/{len(judged)}"
    retired = len(claims) - len(judged)
    return text + (f" (+{retired} retired)" if retired else "")


def claim_rows(claims: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            verdict(c),
            c["statement"] + (f" (retired: {c['retired']})" if c.get("retired") else ""),
            c["metric"],
            measured_text(c),
            f"{c['op']} {format_value(c['threshold'])}",
            format_value(c.get("paper")),
        ]
        for c in claims
    ]


HEADER = ["result", "claim", "metric", "measured", "threshold", "paper"]


def text_table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER, max_width: int = 60) -> str:
    """A fixed-width table; long cells are cut with an ellipsis."""
    cut = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *cut)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in cut)])


def markdown_table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    escape = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
