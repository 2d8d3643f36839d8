"""The experiment grid: weighting schemes x lambda sweep x adapters x seeds, from config.

``grid.schemes`` entries are registry names with their parameters (eisbach.weighting). On top
of the registry's parameters an entry may carry:

- ``lam``: one lambda or a list; a lambda scheme without one takes the sweep ``grid.lams``.
  A lambda scheme at lam = 0 is exactly ``none`` (s = 1), so that point of a sweep becomes the
  one ``none`` run instead of a duplicate.
- ``c: matched`` (scheme ``constant``): the learning-rate-matched control. One run per eisbach
  run of the grid with lam > 0 (or per lam of the entry's own ``lam``), with the same adapter
  and seed; at run time c is that eisbach run's mean applied weight (its run.json).
- ``seeds``: a subset of ``grid.seeds`` for this entry (e.g. controls at one seed only).
- ``sample``: false trains and logs the runs but leaves them out of sampling and metrics.
- ``adapters``: adapters for this entry instead of ``grid.adapters`` (a LoRA barrier run beside
  a DoRA grid, for P4).

run_id names the scheme, its parameters, the adapter and the seed:
``eisbach-l0.5_dora-r16_s0``, ``none_dora-r16_s0``, ``constant-matched-l0.5_dora-r16_s0``.
"""

from __future__ import annotations

# The registry's names, kept here rather than imported from eisbach.weighting: that module
# imports torch (seconds), and Snakemake expands the grid at every start, no-op reruns and
# the evaluate, figures and report jobs included. tests/test_train_grid.py checks they agree.
SCHEMES = (
    "none",
    "constant",
    "eisbach",
    "eisbach_batchmean",
    "eisbach_shuffled",
    "eisbach_inverse",
    "min_snr",
)
LAMBDA_SCHEMES = ("eisbach", "eisbach_batchmean", "eisbach_shuffled", "eisbach_inverse")
PARAM_TAGS = {"lam": "l", "gamma": "g", "c": "c"}
ENTRY_OPTIONS = ("seeds", "sample", "adapters")


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def scheme_tag(scheme: dict) -> str:
    if scheme["name"] == "constant" and scheme.get("c") == "matched":
        return f"constant-matched-l{_fmt(scheme['lam'])}"
    params = "".join(
        f"-{PARAM_TAGS.get(k, k)}{_fmt(v)}" for k, v in sorted(scheme.items()) if k != "name"
    )
    return scheme["name"] + params.replace(" ", "")


def run_id(scheme: dict, adapter: dict, seed: int) -> str:
    """e.g. eisbach-l0.5_dora-r16_s0"""
    return f"{scheme_tag(scheme)}_{adapter['type']}-r{adapter['rank']}_s{seed}"


def _as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def _number(value):
    """YAML numbers as floats (lam 1 and 1.0 name the same run), ints kept for gamma 5."""
    return float(value) if isinstance(value, float) else value


def matched_run(scheme: dict, adapter: dict, seed: int) -> str | None:
    """The eisbach run whose mean applied weight a ``constant c: matched`` run takes."""
    if scheme["name"] != "constant" or scheme.get("c") != "matched":
        return None
    return run_id({"name": "eisbach", "lam": scheme["lam"]}, adapter, seed)


def expand_grid(grid: dict) -> dict[str, dict]:
    """run_id -> {scheme, adapter, seed, sample, match} for every run of the grid, in order."""
    seeds_all = [int(s) for s in grid["seeds"]]
    sweep = [float(v) for v in grid.get("lams", [])]
    runs: dict[str, dict] = {}
    deferred = []

    def add(scheme: dict, entry: dict) -> None:
        seeds = [int(s) for s in entry.get("seeds", seeds_all)]
        unknown = sorted(set(seeds) - set(seeds_all))
        if unknown:
            raise ValueError(f"grid: scheme {scheme['name']} seeds {unknown} not in grid.seeds")
        for adapter in entry.get("adapters", grid["adapters"]):
            for seed in seeds:
                rid = run_id(scheme, adapter, seed)
                if rid in runs:
                    runs[rid]["sample"] = runs[rid]["sample"] or entry.get("sample", True)
                    continue
                runs[rid] = {
                    "scheme": dict(scheme),
                    "adapter": dict(adapter),
                    "seed": seed,
                    "sample": bool(entry.get("sample", True)),
                    "match": matched_run(scheme, adapter, seed),
                }

    for entry in grid["schemes"]:
        name = entry["name"]
        if name not in SCHEMES:
            raise ValueError(f"grid: unknown scheme {name!r}; known: {sorted(SCHEMES)}")
        params = {k: _number(v) for k, v in entry.items() if k not in ("name", *ENTRY_OPTIONS)}
        if name == "constant" and params.get("c") == "matched":
            deferred.append(entry)
            continue
        if name in LAMBDA_SCHEMES:
            lams = [float(v) for v in _as_list(params.pop("lam", sweep))]
            if not lams:
                raise ValueError(f"grid: scheme {name} needs lam, or the sweep grid.lams")
            for lam in lams:
                add({"name": "none"} if lam == 0 else {"name": name, "lam": lam, **params}, entry)
        else:
            if "lam" in params:
                raise ValueError(f"grid: scheme {name} takes no lam")
            add({"name": name, **params}, entry)

    eisbach_lams = sorted(
        {r["scheme"]["lam"] for r in runs.values() if r["scheme"]["name"] == "eisbach"}
    )
    for entry in deferred:
        lams = [float(v) for v in _as_list(entry.get("lam", eisbach_lams))]
        if not lams:
            raise ValueError("grid: constant with c: matched needs an eisbach run with lam > 0")
        for lam in lams:
            if lam <= 0:
                raise ValueError("grid: constant c: matched needs lam > 0 (lam 0 is `none`)")
            add({"name": "constant", "c": "matched", "lam": lam}, entry)

    for rid, run in runs.items():
        if run["match"] is not None and run["match"] not in runs:
            raise ValueError(
                f"grid: {rid} is matched to {run['match']}, which the grid does not train; "
                "add that eisbach lam (and seed) to grid.schemes"
            )
    return runs


__all__ = ["expand_grid", "matched_run", "run_id", "scheme_tag"]
