"""Numbers the report states, computed from results records only (the figures and the summary read these).

Intervals: a probe record carries its test score and a 95% interval (bootstrap over test clips of the
seed-averaged per-clip scores, see ``audiolp.eval.linear``), and for accuracy each test clip's seed-averaged
correctness. A difference (any signed sum) of scores on the same test clips is **paired**: the per-clip
differences d_i give half-width 1.96 * sd(d) / sqrt(n) (every encoder is scored on the same clips, so their scores
move together and an unpaired interval would be far too wide). Scores without per-clip values (mAP, records
written before they were stored, language tasks) combine as independent under a normal approximation:
half-width = sqrt(h_a^2 + h_b^2), which is conservative when they share clips. A mean over tasks averages the
per-task values and combines their half-widths as sqrt(sum h_i^2) / k (tasks' test sets are disjoint, hence
independent).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Z95 = 1.959963984540054


def parse_run_name(name: str) -> tuple[str, str | None, str]:
    """``contrastive+tagging@1M`` -> ("contrastive", "tagging", "1M"); references -> (name, None, "")."""
    head, _, scale = name.partition("@")
    objective, _, init = head.partition("+")
    return objective, init or None, scale


def scale_size(scale: str) -> float:
    """Caption pairs a scale name stands for on the paper's corpus (for axes and fits); 'full' = 10.7M."""
    from audiolp.data.scale import PAPER_FULL_PAIRS, parse_scale

    n = parse_scale(scale)
    return float(PAPER_FULL_PAIRS if n is None else n)


@dataclass
class Score:
    value: float
    lo: float
    hi: float
    # Per-test-clip values whose mean is ``value`` (accuracy: seed-averaged correctness) and the fingerprint of the
    # clips they belong to: scores that share it are compared clip by clip.
    clips: np.ndarray | None = field(default=None, repr=False, compare=False)
    clip_set: str = field(default="", repr=False, compare=False)

    @property
    def half(self) -> float:
        return max(self.hi - self.value, self.value - self.lo, 0.0)

    def __sub__(self, other: "Score") -> "Score":
        return contrast([(1.0, self), (-1.0, other)])

    @property
    def paired(self) -> bool:
        return self.clips is not None

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def text(self, digits: int = 3) -> str:
        return f"{self.value:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"


def contrast(terms: list[tuple[float, Score]]) -> Score:
    """sum of coef * score with a 95% interval: paired over clips when every term has per-clip values on the same
    clips (the result keeps the per-clip combination, so contrasts of contrasts stay paired), else independent."""
    value = float(sum(c * s.value for c, s in terms))
    sets = {s.clip_set for _, s in terms}
    if all(s.clips is not None for _, s in terms) and len(sets) == 1 and len({len(s.clips) for _, s in terms}) == 1:
        d = sum(c * s.clips for c, s in terms)
        h = Z95 * float(np.std(d, ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else 0.0
        return Score(value, value - h, value + h, clips=d, clip_set=sets.pop())
    h = math.sqrt(sum((c * s.half) ** 2 for c, s in terms))
    return Score(value, value - h, value + h)


def mean_score(scores: list[Score]) -> Score:
    if not scores:
        raise ValueError("mean of no scores")
    v = float(np.mean([s.value for s in scores]))
    h = math.sqrt(sum(s.half ** 2 for s in scores)) / len(scores)
    return Score(v, v - h, v + h)


def probe_scores(records: list[dict], encoder: str, pooling: str = "mean") -> dict[str, Score]:
    """task -> Score of one encoder (record name, e.g. ``contrastive@full``) under one pooling. SED (pooling
    "frames": a frame-wise head, no pooling) counts with the default mean-pooled suite only."""
    out = {}
    accepted = (pooling, "frames") if pooling == "mean" else (pooling,)
    for r in records:
        p = r.get("params", {})
        if r.get("kind") == "probe" and p.get("encoder") == encoder and p.get("pooling") in accepted:
            m = r["metrics"]
            clips = np.asarray(m["test_per_clip"], dtype=float) if "test_per_clip" in m else None
            out[p["task"]] = Score(float(m["test"]), float(m["interval"][0]), float(m["interval"][1]), clips=clips,
                                   clip_set=str(m.get("test_clips", "")))
    return out


def classification_tasks(records: list[dict]) -> list[str]:
    """Tasks of the probe records scored by accuracy or mAP (the "mean over tasks" everywhere leaves SED out: its
    segment F1 is another scale)."""
    return list(dict.fromkeys(r["params"]["task"] for r in records
                              if r.get("kind") == "probe" and r["params"].get("kind") in ("multiclass", "multilabel")))


def encoders_in(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["params"]["encoder"] for r in records if r.get("kind") == "probe"))


def gap(records: list[dict], a: str, b: str, pooling: str = "mean", tasks: list[str] | None = None) \
        -> tuple[dict[str, Score], Score | None]:
    """Per-task score difference a - b (paired where both have per-clip values) and the mean difference over the
    tasks both have (intervals as above)."""
    sa, sb = probe_scores(records, a, pooling), probe_scores(records, b, pooling)
    common = [t for t in (tasks or sa) if t in sa and t in sb]
    per_task = {t: sa[t] - sb[t] for t in common}
    return per_task, (mean_score(list(per_task.values())) if common else None)


@dataclass
class ScalingFit:
    """score = intercept + slope * log10(caption pairs), least squares, per (objective, task)."""

    objective: str
    task: str
    sizes: list[float]
    scores: list[float]
    halves: list[float]
    intercept: float
    slope: float
    slope_interval: tuple[float, float]
    samples: np.ndarray = field(repr=False, default=None)  # (n_boot, 2) bootstrap (intercept, slope)


def fit_scaling(objective: str, task: str, points: list[tuple[float, Score]], n_boot: int = 2000,
                seed: int = 0) -> ScalingFit:
    """Fit a line in log10(size); its interval by a parametric bootstrap: each point's score redrawn from
    Normal(score, half / 1.96), the line refitted. Needs >= 2 distinct sizes."""
    sizes = np.array([p[0] for p in points], dtype=float)
    if len(set(sizes.tolist())) < 2:
        raise ValueError(f"{objective}/{task}: a scaling fit needs >= 2 scales, got {sorted(set(sizes.tolist()))}")
    x = np.log10(sizes)
    y = np.array([p[1].value for p in points])
    sd = np.array([p[1].half for p in points]) / Z95
    slope, intercept = np.polyfit(x, y, 1)
    rng = np.random.default_rng(seed)
    draws = y[None, :] + rng.standard_normal((n_boot, len(y))) * sd[None, :]
    xc = x - x.mean()
    slopes = (draws - draws.mean(1, keepdims=True)) @ xc / (xc @ xc)
    intercepts = draws.mean(1) - slopes * x.mean()
    lo, hi = np.percentile(slopes, [2.5, 97.5])
    return ScalingFit(objective, task, sizes.tolist(), y.tolist(), (sd * Z95).tolist(), float(intercept),
                      float(slope), (float(lo), float(hi)), np.stack([intercepts, slopes], 1))


@dataclass
class Crossover:
    """Where ``late`` (e.g. captioning) overtakes ``early`` (e.g. contrastive) by the two fits."""

    task: str
    inside_range: bool  # the point estimate lies within the fitted sizes
    size: float | None  # caption pairs at the crossover (point estimate), None if the lines do not cross ahead
    interval: tuple[float, float] | None  # 95% bootstrap interval of the size (over draws that cross ahead)
    share_crossing: float  # share of bootstrap draws in which late overtakes early beyond the smallest size
    verdict: str


def crossover(early: ScalingFit, late: ScalingFit) -> Crossover:
    """The size where ``late``'s line rises above ``early``'s, with a bootstrap interval from the fits' draws."""
    lo_x, hi_x = math.log10(min(early.sizes + late.sizes)), math.log10(max(early.sizes + late.sizes))

    def cross(i_e, s_e, i_l, s_l):
        i_e, s_e, i_l, s_l = (np.asarray(v, dtype=float) for v in (i_e, s_e, i_l, s_l))
        with np.errstate(divide="ignore", invalid="ignore"):
            x = (i_e - i_l) / (s_l - s_e)
        return np.where(s_l > s_e, x, np.nan)  # late must rise faster to overtake (equal slopes never cross)

    point = float(cross(early.intercept, early.slope, late.intercept, late.slope))
    draws = cross(early.samples[:, 0], early.samples[:, 1], late.samples[:, 0], late.samples[:, 1])
    ahead = draws[np.isfinite(draws) & (draws >= lo_x)]
    share = float(len(ahead) / len(draws))
    interval = (float(10 ** np.percentile(ahead, 2.5)), float(10 ** np.percentile(ahead, 97.5))) if len(ahead) else None
    if not math.isfinite(point) or point < lo_x:
        lead = (late.intercept + late.slope * lo_x) - (early.intercept + early.slope * lo_x)
        if lead > 0:  # no crossing ahead because late is in front from the start
            verdict = (f"{late.objective} is ahead of {early.objective} already at the smallest scale (by the fitted "
                       f"lines, {lead:+.3f}), and the gap {'grows' if late.slope > early.slope else 'narrows'} with "
                       f"data; {share:.0%} of bootstrap draws cross above the smallest scale")
        else:
            verdict = (f"{late.objective} does not overtake {early.objective} beyond the smallest scale "
                       f"(by the fitted lines; {share:.0%} of bootstrap draws cross)")
        return Crossover(early.task, False, None, interval, share, verdict)
    size, inside = 10 ** point, point <= hi_x
    where = "inside" if inside else "beyond"
    verdict = (f"{late.objective} overtakes {early.objective} at ~{human(size)} caption pairs, {where} the fitted "
               f"range ({human(10 ** lo_x)}-{human(10 ** hi_x)}); "
               + (f"95% interval {human(interval[0])}-{human(interval[1])} over the {share:.0%} of bootstrap "
                  "draws that cross" if interval else "no bootstrap draw crosses"))
    return Crossover(early.task, inside, size, interval, share, verdict)


def human(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


LANGUAGE_KINDS = ("retrieval", "captioning", "qa")


def language_score(record: dict) -> tuple[str, Score] | None:
    """(panel name, Score) of a language-task record: retrieval -> text-to-audio R@1 (per protocol: own heads /
    LiT), captioning -> CIDEr-D (per decoder: own / trained on the frozen encoder), QA -> its judge's score."""
    kind, m, p = record.get("kind"), record.get("metrics", {}), record.get("params", {})
    if kind == "retrieval":
        return f"text-to-audio R@1 ({p.get('protocol')}) · {p.get('task')}", Score(m["test"], *m["interval"])
    if kind == "captioning" and "cider_d" in m:
        decoder = p.get("protocol", {}).get("decoder", "")
        decoder = "own decoder" if decoder == "own" else "frozen-encoder decoder"
        cider = m["cider_d"]
        return f"caption CIDEr-D ({decoder}) · {p.get('task')}", Score(cider["value"], *cider["interval"])
    if kind == "qa":
        judge = str(p.get("judge", "exact_match")).replace("_", " ")
        return f"QA {judge}", Score(m["test"], *m["interval"])
    return None
