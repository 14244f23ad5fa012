"""The README and docs/ cannot rot silently: every relative link (and its #anchor) points to an
existing file and heading, and every config named on a command line there exists in conf/.

Rules for config names (``experiment=<name>``, also ``ablation=``, ``hparams_search=``,
``protocol=``, ``logger=``, ``trainer=``, ``callbacks=``, ``data=``):

* a name is ``conf/<group>/<name>.yaml``; a comma list (a multirun) is checked item by item;
* ``$VAR`` is looked up in a ``VAR=value`` assignment of the same file and its value checked;
* ``<placeholder>`` parts stand for any file: ``experiment=two_bce/<machine>`` needs at least one
  ``conf/experiment/two_bce/*.yaml``; ``<a|b>`` lists choices, each of which must exist;
* ``experiment=tuned/...`` names are written by a search (``hparams_search``'s export), so they
  need not exist, but the line that names one must say so with the word "exported".
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
GROUPS = ("experiment", "ablation", "hparams_search", "protocol", "logger", "trainer", "callbacks", "data")
SEARCH_EXPORT = "tuned/"
SEARCH_MARKER = "exported"

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_OVERRIDE = re.compile(r"(?<![\w./@$-])(" + "|".join(GROUPS) + r")=((?:<[^>\s]*>|[^\s`'\"|)\]\\;<])+)")


def doc_files(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lower-cased, characters other than
    letters, digits, marks, ``_``, ``-`` and spaces dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links → their text
    text = re.sub(r"<[^>]+>", "", text)                          # inline HTML tags
    text = text.replace("`", "").replace("*", "")
    text = "".join(c for c in text.lower()
                   if c in "-_ " or unicodedata.category(c)[0] in "LNM")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, duplicates numbered as GitHub does (-1, -2)."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        if m := _HEADING.match(line):
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else f"{base}-{n}")
    return result


def broken_links(path: Path) -> list[str]:
    """Relative links of ``path`` whose file or #anchor does not exist, as 'line: target (why)'."""
    problems = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in _LINK.findall(_INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                problems.append(f"{path.name}:{number}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{path.name}:{number}: {target} (no heading with that anchor)")
    return problems


def config_names(text: str) -> list[tuple[int, str, str, str]]:
    """(line number, line, group, name) for every ``group=name`` override, lists split and
    ``$VAR`` resolved from ``VAR=...`` assignments in the same text."""
    assignments = dict(re.findall(r"(?m)^\s*(?:export\s+)?([A-Za-z_]\w*)=\"?([^\s\"]+)", text))
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for group, value in _OVERRIDE.findall(line):
            if value.startswith("$"):
                value = assignments.get(value.lstrip("${").rstrip("}"), value)
            for name in filter(None, value.rstrip(".,:").split(",")):
                if m := re.search(r"<([^>]*\|[^>]*)>", name):  # <a|b>: every choice
                    found += [(number, line, group, name[:m.start()] + choice + name[m.end():])
                              for choice in m.group(1).split("|")]
                else:
                    found.append((number, line, group, name))
    return found


def missing_configs(path: Path, conf: Path = CONF) -> list[str]:
    problems = []
    for number, line, group, name in config_names(path.read_text(encoding="utf-8")):
        where = f"{path.name}:{number}: {group}={name}"
        if name.startswith("$"):
            problems.append(f"{where} (no {name[1:]}=... assignment in this file)")
        elif group == "experiment" and name.startswith(SEARCH_EXPORT):
            if SEARCH_MARKER not in line.lower():
                problems.append(f"{where} (a search export: say '{SEARCH_MARKER}' on its line)")
        elif not list(conf.glob(f"{group}/{re.sub(r'<[^>]*>', '*', name)}.yaml")):
            problems.append(f"{where} (no conf/{group}/{name}.yaml)")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files_and_headings(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_configs_named_in_commands_exist(path):
    assert missing_configs(path) == []


def test_the_docs_are_found():
    names = {p.name for p in doc_files()}
    assert {"README.md", "reproduction.md"} <= names


# the checker itself, on hand-written examples


def test_slug_follows_github():
    assert slug("Scoring defaults: domain shift and small fit sets") == "scoring-defaults-domain-shift-and-small-fit-sets"
    assert slug("`method_table.py`: every method on the synthetic set, one table") == \
        "method_tablepy-every-method-on-the-synthetic-set-one-table"
    assert slug("Reproducing the papers' tables") == "reproducing-the-papers-tables"
    assert slug("Sweeps, search, clusters and W&B") == "sweeps-search-clusters-and-wb"
    assert slug("Figures measured on the synthetic set (CPU)") == "figures-measured-on-the-synthetic-set-cpu"
    assert slug("Label sets: sections or attribute combinations") == "label-sets-sections-or-attribute-combinations"


def test_checker_finds_broken_links_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Same\n\n## Same\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Top\n[ok](docs/a.md) [ok](docs/a.md#same-1) [ok](#top) [web](https://example.org/x)\n"
        "[bad](docs/b.md) [bad anchor](docs/a.md#same-2) [bad local](#nowhere)\n"
        "`[in code](docs/c.md)`\n```\n[in a fence](docs/d.md)\n```\n", encoding="utf-8")
    assert broken_links(readme) == [
        "README.md:3: docs/b.md (no such file)",
        "README.md:3: docs/a.md#same-2 (no heading with that anchor)",
        "README.md:3: #nowhere (no heading with that anchor)",
    ]


def test_checker_finds_missing_configs(tmp_path):
    conf = tmp_path / "conf"
    (conf / "experiment" / "two_bce").mkdir(parents=True)
    (conf / "experiment" / "ae.yaml").write_text("", encoding="utf-8")
    (conf / "experiment" / "two_bce" / "fan.yaml").write_text("", encoding="utf-8")
    (conf / "data").mkdir()
    (conf / "data" / "synthetic.yaml").write_text("", encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "E=two_bce/fan,two_bce/pump\n"
        "asd-train experiment=ae data=synthetic data.root=x model.experiment=nothing\n"
        "asd-train -m experiment=ae,gone\n"
        "asd-train -m experiment=$E\n"
        "`experiment=two_bce/<machine>` and `experiment=<nothing>/x`\n"
        "asd-train experiment=tuned/two_bce/fan   # the exported best trial\n"
        "asd-train experiment=tuned/two_bce/fan   # the best trial\n"
        "asd-train experiment=$UNSET data=<synthetic|dcase2030>\n", encoding="utf-8")
    assert missing_configs(doc, conf) == [
        "doc.md:3: experiment=gone (no conf/experiment/gone.yaml)",
        "doc.md:4: experiment=two_bce/pump (no conf/experiment/two_bce/pump.yaml)",
        "doc.md:5: experiment=<nothing>/x (no conf/experiment/<nothing>/x.yaml)",
        "doc.md:7: experiment=tuned/two_bce/fan (a search export: say 'exported' on its line)",
        "doc.md:8: experiment=$UNSET (no UNSET=... assignment in this file)",
        "doc.md:8: data=dcase2030 (no conf/data/dcase2030.yaml)",
    ]
