"""Write the results dashboard, ``results/README.md``: every table and figure on one page, with provenance.

Each experiment's own results file (written by its make target, with its profile, device, seed and commit)
is copied in under one heading, with its figures shown below it and the command that re-makes it; an
experiment without results says which target makes them. Quick-profile results live in ``results/``,
other profiles in ``results/<profile>/``.

    .venv/bin/python scripts/make_dashboard.py --profile quick
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralode.training import atomic_write_text  # noqa: E402
from neuralode.training.reproducibility import git_commit  # noqa: E402


@dataclass(frozen=True)
class Section:
    """One experiment's results: its files, its figures and the command that makes them."""

    title: str
    documents: tuple[str, ...]
    figures: tuple[str, ...]
    command: str
    extras: tuple[str, ...] = ()  # data files (csv, json, animations) listed in the file index


SECTIONS = (
    Section("MNIST, Table 1", ("table1.md",), (), "make table1", ("table1.csv",)),
    Section("NFE statistics, Figure 3", ("figure3.md",), ("figure3.png",), "make figure3", ("figure3.csv",)),
    Section(
        "Continuous normalizing flows, Figures 4-5",
        ("cnf_density.md", "cnf_mle.md", "cnf_trace.md"),
        ("cnf_density.png", "cnf_samples.png", "cnf_moons.gif"),
        "make cnf",
        ("cnf_density.csv", "cnf_mle.csv", "cnf_trace.csv", "cnf_circles.gif"),
    ),
    Section(
        "Regularised neural ODEs (RNODE)",
        ("regularization.md",),
        ("regularization.png",),
        "make regularization",
        ("regularization.csv",),
    ),
    Section(
        "Latent ODE, Table 2",
        ("table2.md",),
        ("latent_extrapolation.png", "latent_trajectories.png", "latent_poisson.png"),
        "make table2",
        ("table2.csv",),
    ),
    Section("Solver methods (order, stiffness)", ("method_table.md",), (), "python scripts/method_table.py"),
    Section("Benchmarks", ("bench.md",), ("bench_memory.png",), "make bench", ("bench.json",)),
    Section(
        "Benchmarks: stiff problems only",
        ("bench_stiff/bench.md",),
        (),
        "make bench-stiff",
        ("bench_stiff/bench.json",),
    ),
    Section(
        "Benchmarks: the stiff step counts beside diffrax's Kvaerno5",
        ("bench_stiff/diffrax_kvaerno5.md",),
        (),
        "make bench-diffrax",
        ("bench_stiff/diffrax_kvaerno5.json",),
    ),
)


def demote(markdown: str, levels: int = 2) -> str:
    """Push every heading down ``levels`` levels, so a file's own title nests under its section."""
    return re.sub(r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + levels) + " ", markdown, flags=re.M)


def section_text(section: Section, folder: Path, profile: str) -> str:
    """The section: the results files' contents and figures, or what to run to make them."""
    suffix = "" if profile == "quick" else f" PROFILE={profile}"
    command = section.command + (suffix if section.command.startswith("make") else "")
    lines = [f"## {section.title}", "", f"Re-make: `{command}`.", ""]
    present = [name for name in section.documents if (folder / name).exists()]
    if not present:
        return "\n".join([*lines, f"_Not produced yet at the {profile} profile: run `{command}`._", ""])
    for name in present:
        lines += [demote((folder / name).read_text().strip()), "", f"(from `{name}`)", ""]
    for name in section.figures:
        if (folder / name).exists():
            lines += [f"![{name}]({name})", ""]
    return "\n".join(lines)


def dashboard(folder: Path, profile: str) -> str:
    """The whole page."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        f"# Results ({profile} profile)",
        "",
        f"Written by `scripts/make_dashboard.py` (the last step of `make reproduce`) on {now} at commit "
        f"`{git_commit()}`. Every section below is a results file copied in as its make target wrote it: "
        "each states the profile, device, seed, date and commit of the runs it comes from, and the paper's "
        "numbers stand in their own columns, never mixed with ours. The runs themselves (checkpoints, "
        "TensorBoard events, `epochs.csv`, `result.json`) are in `runs/`, not committed; `make tensorboard` "
        "shows them.",
        "",
        "Contents: " + ", ".join(f"[{s.title}](#{anchor(s.title)})" for s in SECTIONS) + ".",
        "",
    ]
    about = folder / "ABOUT.md"  # how this folder's runs were made, when not by `make reproduce`
    if about.exists():
        header += [demote(about.read_text().strip(), 1), ""]
    others = sorted(path.parent for path in folder.glob("*/ABOUT.md"))
    if others:
        header += [
            "Other result folders: "
            + ", ".join(f"[`{p.name}/`]({p.name}/README.md) ({_first_line(p / 'ABOUT.md')})" for p in others)
            + ".",
            "",
        ]
    body = "\n".join(section_text(s, folder, profile) for s in SECTIONS)
    return "\n".join(header) + "\n" + body + "\n" + file_index(folder)


def _first_line(path: Path) -> str:
    """A file's first line without its heading marks."""
    return path.read_text().strip().splitlines()[0].lstrip("# ").strip()


def file_index(folder: Path) -> str:
    """Which file here comes from which command."""
    lines = ["## Files", "", "| file | section | made by |", "|---|---|---|"]
    for section in SECTIONS:
        for name in (*section.documents, *section.figures, *section.extras):
            if (folder / name).exists():
                lines.append(f"| `{name}` | {section.title} | `{section.command}` |")
    return "\n".join(lines) + "\n"


def anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--results", type=Path, default=None, help="default: results/ or results/<profile>/")
    args = parser.parse_args()
    folder = args.results or (
        ROOT / "results" if args.profile == "quick" else ROOT / "results" / args.profile
    )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "README.md", dashboard(folder, args.profile))
    print(f"wrote {folder / 'README.md'}")


if __name__ == "__main__":
    main()
