"""docs/study.md from a study folder: every number is read from the arms' metrics.json (and the
measured benchmark's JSON); the only typed text is the recipes' (labels, the poster's answers,
what more compute would change)."""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

from .config import QUESTIONS

HEADS = ("space_group", "crystal_system", "bravais_lattice", "extinction_group")
SHORT = {"space_group": "SG", "crystal_system": "CS", "bravais_lattice": "BL", "extinction_group": "EG"}
DEFAULT_TITLES = {"dedup": "De-duplication", "volume": "Data volume", "imbalance": "Label imbalance",
                  "resolution": "Resolution", "hd": "H/D"}


HOW_IT_RUNS = """## How the study runs (`xtalhpc study`)

```bash
xtalhpc study jobs/study --cluster local --output STUDYDIR --report docs/study.md   # all arms; rerun to resume
xtalhpc study jobs/study --output STUDYDIR --arms res-low res-high                   # some arms
xtalhpc study jobs/study --output STUDYDIR --report docs/study.md --report-only     # the report alone
sbatch slurm/study.sh jobs/study /scratch/$USER/study -- --partition gpu --time 2:00:00   # Slurm
```

`jobs/study/study.toml` holds what the arms share (the training recipe, `jobs/train-study.toml`; the
real-structure and measured evaluation sets; the rare-group table; the poster's answers); every other
`jobs/study/*.toml` is one arm: `[arm]` (question: dedup, volume, imbalance, resolution or hd; label),
`[data]` (`source = "synthetic"`: `xtalhpc generate --synthetic N` with an optional `prior`;
`"synthesize"`: random crystals with extra element weights, e.g. H; `"variants"`: crystals plus augmented
copies, split at random or by structure type, optionally de-duplicated; instrument, seed, split,
`deuterate`, `h_background`), `[train]` (a recipe and dotted `overrides` of it) and `[evaluate]` (`also`:
other arms' test sets, `real`, `measured`). Every recipe is checked before anything runs, like every config
of the project: an unknown key or a bad value is refused naming the file and the field, exit status 2.

Per arm the driver runs the project's own commands in child processes (the exact commands are listed above
and in `STUDYDIR/arms/<arm>/done.json`): `xtalhpc synthesize`/`split`/`dedup`/`generate` for the data
(each dataset once, in `STUDYDIR/data/<kind>-<digest>/`, shared by arms that ask for the same), `xtalhpc
train` (`--cluster local|slurm|debug`), `xtalhpc evaluate` on each held-out set, `benchmarks/bench_measured.py`
on the measured patterns, and `xtalhpc evaluate --compare` per question. An arm is done when its `done.json`
holds the digest of its recipe (with the training recipe and the shared evaluation settings) and its
metrics.json files exist: a rerun skips it; a changed recipe reruns it from training on. Exit status 0 when
every arm finished, 1 when one failed (the others still run and are recorded), 2 for a bad recipe, 130 when
interrupted (rerun to resume). The tables above are read from the arms' metrics.json by
`xtalhpc.study.report`; nothing in them is typed in."""


def done_records(studydir: str | Path) -> list[dict]:
    """The ``done.json`` of every finished arm, with its metrics loaded (``rec["metrics"][set]``)."""
    out = []
    for p in sorted(Path(studydir, "arms").glob(f"*/{'done.json'}")):
        rec = json.loads(p.read_text())
        rec["metrics"] = {k: json.loads((p.parent / e["metrics"]).read_text()) for k, e in rec["evals"].items()}
        rec["measured_result"] = json.loads((p.parent / rec["measured"]).read_text()) if rec.get("measured") else None
        out.append(rec)
    out.sort(key=lambda r: (QUESTIONS.index(r["question"]), r.get("order", 0), r["arm"]))
    return out


def rare_groups(prior_csv: str, fraction: float) -> set[str]:
    """The ``fraction`` of the 230 space groups least frequent in the table (ties: higher number rarer)."""
    from ..generate.items import space_group_prior

    counts = space_group_prior(prior_csv)
    order = sorted(range(230), key=lambda i: (counts[i], -i))
    return {str(i + 1) for i in order[:int(round(fraction * 230))]}


def rare_accuracy(metrics: dict, rare: set[str]) -> float | None:
    pc = metrics["heads"]["space_group"]["per_class"]
    n = sum(v["support"] for k, v in pc.items() if k in rare)
    if not n:
        return None
    return sum(v["accuracy"] * v["support"] for k, v in pc.items() if k in rare and v["support"]) / n


def _f(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}"


def metric(rec: dict, key: str, head: str = "space_group", what: str = "top1"):
    m = rec["metrics"].get(key)
    if m is None or head not in m["heads"]:
        return None
    return m["heads"][head].get(what)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def accuracy_table(recs: list[dict], rare: set[str] | None) -> list[str]:
    header = ["arm", "evaluated on", "n"]
    for h in HEADS:
        header += [f"{SHORT[h]} top-1", f"{SHORT[h]} top-3"]
    header += ["SG macro", "macro avg (4 heads)"]
    if rare is not None:
        header.append("SG rare-group top-1")
    rows = []
    for r in recs:
        for key, e in r["evals"].items():
            m = r["metrics"][key]
            row = [r["arm"], e["label"], str(m["n"])]
            for h in HEADS:
                row += [_f(metric(r, key, h, "top1")), _f(metric(r, key, h, "top3"))]
            macros = [metric(r, key, h, "macro_accuracy") for h in HEADS]
            macros = [x for x in macros if x is not None]
            row += [_f(metric(r, key, "space_group", "macro_accuracy")),
                    _f(sum(macros) / len(macros) if macros else None)]
            if rare is not None:
                row.append(_f(rare_accuracy(m, rare)))
            rows.append(row)
    return _table(header, rows)


def measured_table(recs: list[dict]) -> list[str]:
    rows = []
    for r in recs:
        res = r.get("measured_result")
        if not res:
            continue
        n_all = len(res["results"])
        n = sum(1 for x in res["results"] if "error" not in x)
        rates = res["rates"]
        rows.append([r["arm"], f"{n} of {n_all}"] +
                    [f"{rates[k]['hits']} ({_f(rates[k]['of_predicted'])})" for k in ("cs1", "sg1", "sg3", "bl1")])
    if not rows:
        return []
    return _table(["arm", "patterns predicted", "CS top-1", "SG top-1", "SG top-3", "BL top-1"], rows)


def compute_table(recs: list[dict]) -> list[str]:
    rows = []
    for r in recs:
        c = r.get("dataset_counts") or {}
        sp = c.get("splits") or {}
        w = r["wall_s"]
        rows.append([r["arm"], f"{sp.get('train', 0):,} / {sp.get('val', 0):,}",
                     f"{r['train_steps']:,} x {r['batch_size']}",
                     f"{r['train_steps'] * r['batch_size']:,}", f"{w['data']:.0f}", f"{w['train']:.0f}",
                     f"{w['evaluate']:.0f}", f"{w['total']:.0f}"])
    return _table(["arm", "train / val patterns", "steps x batch", "patterns seen", "data s", "train s",
                   "evaluate s", "total s"], rows)


def _owner(recs: list[dict]) -> dict[str, str]:
    """dataset path of an arm's own test set -> the arms whose own test set it is ("a = b" when shared)."""
    out: dict[str, str] = {}
    for r in recs:
        if "test" in r["evals"]:
            d = r["evals"]["test"]["dataset"]
            out[d] = f"{out[d]} = {r['arm']}" if d in out else r["arm"]
    return out


def cross_matrix(recs: list[dict], what: str = "top1", head: str = "space_group") -> tuple[list[str], dict]:
    """Trained-on x tested-on values over the question's own test sets."""
    owner = _owner(recs)
    cols = list(dict.fromkeys(owner.values()))
    mat: dict[tuple[str, str], float] = {}
    for r in recs:
        for key, e in r["evals"].items():
            if e["dataset"] in owner and e["split"] in ("test", "all") and key.startswith("test"):
                mat[(r["arm"], owner[e["dataset"]])] = metric(r, key, head, what)
    return cols, mat


def _own(arm: str, col: str) -> bool:
    return arm in col.split(" = ")


def matrix_table(recs: list[dict], what: str, head: str = "space_group") -> list[str]:
    cols, mat = cross_matrix(recs, what, head)
    if not any(not _own(a, c) for a, c in mat):
        return []
    rows = [[f"trained on {r['arm']}"] + [_f(mat.get((r["arm"], c))) for c in cols] for r in recs]
    return _table([f"{SHORT[head]} {what.replace('top', 'top-').replace('macro_accuracy', 'macro')}"] +
                  [f"tested on {c}" for c in cols], rows)


def _pts(a, b) -> str:
    return "-" if a is None or b is None else f"{100 * (a - b):+.1f} points"


def _diff(ra: dict, ka: str, rb: dict, kb: str, head: str = "space_group") -> str:
    """SG top-1 of (ra, ka) minus that of (rb, kb) in points, with twice the binomial standard error of the
    difference (test sets of n patterns each, taken as independent): how much of it sampling alone could be."""
    a, b = metric(ra, ka, head), metric(rb, kb, head)
    if a is None or b is None:
        return "-"
    na, nb = ra["metrics"][ka]["n"], rb["metrics"][kb]["n"]
    pa, pb = (a * na + 1) / (na + 2), (b * nb + 1) / (nb + 2)  # add-one: no zero error at 0 % or 100 %
    se = math.sqrt(pa * (1 - pa) / max(na, 1) + pb * (1 - pb) / max(nb, 1))
    return f"{100 * (a - b):+.1f} points (2 s.e. {200 * se:.1f})"


def partition_record(rec: dict) -> dict | None:
    """The made.json of a variants arm's partition (train/test files, the dedup summary), found from its
    training dataset's record (``data/<kind>-<digest>/made.json`` names the partition's digest)."""
    ds = Path(rec["dataset"]).parent / "made.json"
    if not ds.exists():
        return None
    d = json.loads(ds.read_text()).get("spec", {}).get("partition")
    if not d:
        return None
    p = ds.parent.parent / f"partition-{d[:12]}" / "made.json"
    return json.loads(p.read_text()) if p.exists() else None


ANSWER_HEADS = (("space_group", "SG"), ("crystal_system", "CS"))


def answer(question: str, recs: list[dict], rare: set[str] | None) -> str:
    """One paragraph computed from the numbers (nothing typed in): top-1 of the space-group and the
    crystal-system heads, differences with twice their binomial standard error."""
    if not recs:
        return "No arm of this question has finished."
    parts: list[str] = []
    if question == "dedup":
        rnd = [r for r in recs if r["data"].get("variant_split") == "random"]
        st = [r for r in recs if r["data"].get("variant_split") == "structure"]
        for r in st:
            dd = (partition_record(r) or {}).get("dedup")
            if dd:
                parts.append(f"`xtalhpc dedup` dropped {dd['dropped']:,} of {dd['before']:,} training-pool files "
                             f"({100 * dd['dropped_fraction']:.0f} %; substituted variants have another formula and "
                             "stay)")
        for head, h in ANSWER_HEADS:
            for r in rnd:
                parts.append(f"{h} top-1 of `{r['arm']}` (random split): {_f(metric(r, 'test', head))} on its own test "
                             f"split, {_f(metric(r, 'heldout', head))} on held-out structure types, i.e. the random "
                             f"split inflates it by {_diff(r, 'test', r, 'heldout', head)}")
            for r in st:
                parts.append(f"`{r['arm']}` (structure-type split{', de-duplicated' if r['data'].get('dedup') else ''})"
                             f": {h} top-1 {_f(metric(r, 'test', head))} on the held-out structure types")
            if rnd and st:
                a, b = rnd[0], st[0]
                parts.append(f"{h} top-1 on the real-structure set: {_f(metric(a, 'real', head))} (random) vs "
                             f"{_f(metric(b, 'real', head))} (structure split), structure minus random "
                             f"{_diff(b, 'real', a, 'real', head)}")
        return "; ".join(parts) + "."
    if question == "volume":
        rs = sorted(recs, key=lambda r: (r.get("dataset_counts") or {}).get("splits", {}).get("train", 0))
        for head, h in ANSWER_HEADS:
            vals = [metric(r, "test", head) for r in rs]
            seq = ", ".join(f"{r['dataset_counts']['splits']['train']:,} -> {_f(v)}" for r, v in zip(rs, vals))
            up = all((b or 0) >= (a or 0) for a, b in zip(vals, vals[1:]))
            parts.append(f"{h} top-1 on the synthetic test split against training patterns: {seq} "
                         f"({'never falling' if up else 'not monotonic'}; smallest to largest "
                         f"{_diff(rs[-1], 'test', rs[0], 'test', head)}); on the real-structure set "
                         + ", ".join(_f(metric(r, "real", head)) for r in rs))
        return "; ".join(parts) + "."
    if question in ("imbalance", "resolution", "hd"):
        for head, h in ANSWER_HEADS:
            cols, mat = cross_matrix(recs, head=head)
            for c in cols:
                vals = {r["arm"]: mat.get((r["arm"], c)) for r in recs if mat.get((r["arm"], c)) is not None}
                if vals:
                    best = max((v, k) for k, v in vals.items())
                    parts.append(f"{h} top-1 on {c}'s test set: best `{best[1]}` ("
                                 + ", ".join(f"{k} {_f(v)}" for k, v in vals.items()) + ")")
            if question in ("resolution", "hd"):
                diag = [v for (a, c), v in mat.items() if _own(a, c) and v is not None]
                off = [v for (a, c), v in mat.items() if not _own(a, c) and v is not None]
                if diag and off:
                    md, mo = sum(diag) / len(diag), sum(off) / len(off)
                    parts.append(f"{h} top-1 trained and tested on the same kind of data: mean {_f(md)}; "
                                 f"crossed: mean {_f(mo)} ({_pts(md, mo)})")
        if question == "imbalance":
            cols, macro = cross_matrix(recs, "macro_accuracy")
            owner = _owner(recs)
            for c in cols:
                vals = {r["arm"]: macro.get((r["arm"], c)) for r in recs if macro.get((r["arm"], c)) is not None}
                parts.append(f"SG macro accuracy on {c}'s test set: "
                             + ", ".join(f"{k} {_f(v)}" for k, v in vals.items()))
                if rare is not None:
                    rv = [f"{r['arm']} {_f(rare_accuracy(r['metrics'][key], rare))}" for r in recs
                          for key, e in r["evals"].items() if key.startswith("test") and owner.get(e["dataset"]) == c]
                    parts.append(f"rare-group SG top-1 on {c}'s test set: " + ", ".join(rv))
        real = ", ".join(f"{r['arm']} {_f(metric(r, 'real'))} / {_f(metric(r, 'real', 'crystal_system'))}"
                         for r in recs if "real" in r["evals"])
        if real:
            parts.append(f"real-structure set, SG / CS top-1: {real}")
        return "; ".join(parts) + "."
    return ""


def _minutes(recs: list[dict], key: str) -> str:
    return f"{sum(r['wall_s'][key] for r in recs) / 60:.0f}"


def write_report(studydir: str | Path, out: str | Path, image_dir: str | Path | None = None,
                 command: str = "") -> Path:
    studydir = Path(studydir)
    info = json.loads((studydir / "study.json").read_text())
    study = info["study"]
    recs = done_records(studydir)
    done = {r["arm"] for r in recs}
    all_arms = info["arms"]
    remaining = [a for a in all_arms if a not in done]
    ev = study["eval"]
    rare = rare_groups(ev["rare_prior"], ev["rare_fraction"]) if ev.get("rare_prior") else None
    out = Path(out)
    lines = [f"# {study['study']['title']}", "",
             "<!-- generated by `xtalhpc study` from the arms' metrics.json; do not edit by hand -->", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by the command below (`$STUDY`: the study "
             "folder; `../shared`: the shared data beside this checkout)", "",
             "```bash\n" + (command or f"xtalhpc study {info.get('folder', 'jobs/study')} --output {studydir}")
             + "\n```",
             "", f"Arms finished: {len(done)} of {len(all_arms)}; their wall time on this machine, summed over the "
             f"arms: {_minutes(recs, 'total')} min (data {_minutes(recs, 'data')}, training {_minutes(recs, 'train')}, "
             f"evaluation {_minutes(recs, 'evaluate')}; a dataset shared by arms counts for each)."]
    if remaining:
        lines += [f"Not finished: {', '.join(remaining)}. The same command resumes: finished arms are skipped, the "
                  "others run (datasets already made are reused)."]
    if study["study"].get("scale_note"):
        lines += ["", "**Scale.** " + study["study"]["scale_note"]]
    lines += ["", "Every arm is evaluated on its own synthetic test split (for `variants` arms: the test files their "
              "split gives), on patterns simulated from real structures of the shared data folder (never trained on; "
              f"the first {ev['real_max']} structure files of {', '.join(ev['real_structures']) or '-'}, with "
              f"`--augment {ev['real_augment']}`), and on the measured patterns of "
              f"{Path(ev['measured_csv']).name if ev['measured_csv'] else '(none)'}. Columns: top-1/top-3 per head "
              "(SG space group, CS crystal system, BL Bravais lattice, EG extinction group), SG macro accuracy "
              "(mean over the space groups present), and the mean of the four heads' macro accuracies."]
    if rare is not None:
        lines += ["", f"Rare groups: the {len(rare)} space groups least frequent in "
                  f"`{Path(ev['rare_prior']).name}` (ties: higher number counted rarer); their accuracy is the top-1 "
                  "over the test patterns of those groups."]
    questions = study.get("questions", {})
    for i, q in enumerate(QUESTIONS, 1):
        qrecs = [r for r in recs if r["question"] == q]
        qarms = [a for a, v in all_arms.items() if v["question"] == q]
        if not qarms:
            continue
        text = questions.get(q, {})
        lines += ["", f"## {i}. {text.get('title') or DEFAULT_TITLES[q]}", ""]
        lines += ["Arms: " + "; ".join(f"`{a}` ({all_arms[a]['label']})" + ("" if a in done else " **not finished**")
                                       for a in qarms) + "."]
        lines += ["", f"**What the numbers say.** {answer(q, qrecs, rare if q == 'imbalance' else None)}"]
        if text.get("note"):
            lines += ["", f"**How the arms were made.** {text['note']}"]
        if text.get("poster"):
            lines += ["", f"**What the poster reported.** {text['poster']}"]
        if not qrecs:
            continue
        lines += ["", "Accuracy (from each arm's `eval/<set>/metrics.json`):", ""]
        lines += accuracy_table(qrecs, rare if q == "imbalance" else None)
        for what, head in (("top1", "space_group"), ("top1", "crystal_system"), ("macro_accuracy", "space_group")):
            mt = matrix_table(qrecs, what, head)
            if mt and (what == "top1" or q == "imbalance"):
                lines += ["", "Trained on (rows) x tested on (columns), synthetic test sets:", ""] + mt
        mt = measured_table(qrecs)
        if mt:
            lines += ["", "Measured patterns (`benchmarks/bench_measured.py --model RUN/model.pt`; hits and rate over "
                      "the patterns predicted):", ""] + mt
        lines += ["", "Compute (this machine; data = the arm's dataset and structure pool, built once and shared by "
                  "arms that ask for the same):", ""] + compute_table(qrecs)
        cmp_dir = studydir / "compare" / f"{q}-test"
        if image_dir is not None and (cmp_dir / "compare.png").exists():
            image_dir = Path(image_dir)
            image_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cmp_dir / "compare.png", image_dir / f"{q}-test.png")
            rel = Path(image_dir / f"{q}-test.png").resolve().relative_to(out.parent.resolve()) \
                if str(image_dir.resolve()).startswith(str(out.parent.resolve())) else image_dir / f"{q}-test.png"
            lines += ["", f"![{q}: top-1 per head on each arm's own test set (xtalhpc evaluate --compare)]({rel})"]
        lines += ["", "Commands the driver ran (per arm; the dataset commands once per dataset):", "", "```bash"]
        for r in qrecs:
            lines += [f"# {r['arm']}"] + r.get("data_commands", []) + r["commands"]
        lines += ["```"]
        if text.get("more_compute"):
            lines += ["", f"**With more compute.** {text['more_compute']}"]
    lines += ["", HOW_IT_RUNS, ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(portable_paths("\n".join(lines), studydir))
    return out


def portable_paths(text: str, studydir: Path) -> str:
    """``text`` with this machine's paths written as a reader can use them: the study folder as
    ``$STUDY``, this checkout as ``.``, and the shared data folder beside it as ``../shared``."""
    repo = Path(__file__).resolve().parents[2]
    subs = [(str(Path(studydir).resolve()), "$STUDY"), (str(studydir), "$STUDY"),
            (str(repo.parent / "shared") + "/", "../shared/"), (str(repo) + "/", "")]
    for old, new in sorted(subs, key=lambda s: -len(s[0])):
        if old not in ("", ".", "/"):
            text = text.replace(old, new)
    return text
