"""Duplicate suggestions and name search on FEBRL: cardstream's people core beside Splink.

    python -m bench.duplicates [--dataset febrl4|febrl3|both] [--fields all|no-ids|both]
                               [--threshold P] [--cap N] [--pipeline em|default|both]
    python -m bench.duplicates --scale 1000000 [--cap N]

For each dataset, twice: with every FEBRL field (soc_sec_id sent as `phone`,
as Splink's FEBRL examples compare soc_sec_id), and with names, birth date and
address only (no identifier at all). Each time it runs

* cardstream's core in-process (`run_core`): records → `person_of` → blocking
  keys into capped blocks → candidate pairs → a model estimated by EM on those
  pairs (no labels) → `score`; suggestions are pairs whose match probability
  reaches the threshold;
* Splink (DuckDB) with the settings of its documented FEBRL examples
  (`docs/demos/examples/duckdb/febrl3` and `febrl4`: blocking rules, comparisons,
  prior from deterministic rules, u by random sampling, m by EM on birth date
  then postcode); without identifiers, the soc_sec_id comparison, blocking and
  deterministic rules are left out;

* with `--pipeline`, a real worker on an embedded broker (`bench.people_pipeline`):
  every record sent as an identify event (CustomerId = rec_id), the worker timed
  until drained, every `suggested` record of `cdp.duplicate-suggestions` read
  back; the worker's model is the one the core estimated by EM on the same
  records (`em`, handed over as its model file; no labels), its default model
  (`default`), or both, each its own run. Its best F1 only sees pairs at or above
  the threshold (nothing else is published). Also printed: the feed's rate, how
  long the worker took to drain, the suggestion records, internal ops and
  messages per event;

and prints precision / recall / F1 of each at the same probability threshold,
the best F1 over all thresholds (for information: it uses the labels), then for
the core: block sizes, candidates per record, the search hit rate (is each
duplicate's original in the top 5 of a search by the duplicate's name and city?)
and the time per score and per search. Figures are printed, not asserted.

`--scale N` instead indexes N synthetic Polish customers (`synthetic_people`) and
prints block sizes, full blocks, the search by name and city (exact, and with a
typo in the last name: is the profile in the top 5?) and the time of a search
and of a changed profile's duplicate check, in-process (a worker adds its
table reads: about 30 keys and at most 200 Persons per search). 1,000,000
people take about 3 minutes and under 2 GB.

A suggestion source is a function `Dataset -> Suggestions`; `run_core` is the
in-process one, `run_worker` the pipeline's. Search latency with the index in
RocksDB at 1,000,000 profiles: `python -m bench.people_search`.
Needs the `bench` extra: `pip install -e '.[dev,bench]'`.
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version

import pandas as pd

from app.domain.people import (
    DEFAULT_MODEL,
    Block,
    MatchModel,
    Person,
    PersonQuery,
    add_to_block,
    blocking_keys,
    estimate_model,
    gather_candidates,
    person_of,
    query_person,
    rank_candidates,
    score,
    search_keys,
    suggest_duplicates,
)
from bench.people_data import Dataset, Pair, load, pair, synthetic_people

#: Probability at or above which a pair is suggested (both systems).
THRESHOLD = 0.5
#: Ids a block holds before it is marked full (the worker's setting).
BLOCK_CAP = 100
#: Candidates scored per record at most (those sharing most keys first).
MAX_CANDIDATES = 200
SEARCH_TOP = 5


@dataclass
class Suggestions:
    """Every pair a system scored → its match probability, and lines to print about the run."""

    probabilities: dict[Pair, float]
    notes: list[str] = field(default_factory=list)


SuggestionSource = Callable[[Dataset], Suggestions]


@dataclass
class CoreRun:
    """The core's state after indexing a dataset: people, blocks and the estimated model."""

    people: dict[str, Person]
    blocks: dict[str, Block]
    model: MatchModel
    max_candidates: int

    def candidates(self, keys: list[str], exclude: str) -> list[str]:
        """Profile ids sharing a key, most shared keys first (as a worker would look them up)."""
        return gather_candidates(
            (self.blocks.get(k) for k in keys), exclude=exclude, limit=self.max_candidates
        )

    def search(self, query: PersonQuery, exclude: str = "") -> list[str]:
        """The ids of the `SEARCH_TOP` best candidates (ValueError as `search_keys`)."""
        ids = self.candidates(search_keys(query), exclude)
        ranked = rank_candidates(
            query_person(query), ((i, self.people[i]) for i in ids), self.model, SEARCH_TOP
        )
        return [c.profile_id for c in ranked]


def index(dataset: Dataset, cap: int, max_candidates: int) -> CoreRun:
    """People and capped blocks of every record, with the default model (for `run_core`)."""
    people = {
        rec_id: p
        for rec_id, attributes in dataset.attributes.items()
        if (p := person_of(attributes)) is not None
    }
    blocks: dict[str, Block] = {}
    for rec_id in sorted(people):
        for key in blocking_keys(people[rec_id]):
            blocks[key] = add_to_block(blocks.get(key), rec_id, cap)
    return CoreRun(people, blocks, DEFAULT_MODEL, max_candidates)


def candidate_pairs(run: CoreRun, dataset: Dataset) -> tuple[set[Pair], list[int]]:
    """Admissible pairs sharing a key, and the number of candidates of each record."""
    pairs: set[Pair] = set()
    per_record: list[int] = []
    for rec_id, person in run.people.items():
        found = [
            c
            for c in run.candidates(blocking_keys(person), rec_id)
            if dataset.admissible(rec_id, c)
        ]
        per_record.append(len(found))
        pairs.update(pair(rec_id, c) for c in found)
    return pairs, per_record


def run_core(
    dataset: Dataset, cap: int = BLOCK_CAP, max_candidates: int = MAX_CANDIDATES
) -> tuple[Suggestions, CoreRun]:
    """cardstream's core in-process: index, candidates, EM, scores (see the module docstring)."""
    started = time.perf_counter()
    run = index(dataset, cap, max_candidates)
    pairs, per_record = candidate_pairs(run, dataset)
    indexed = time.perf_counter()
    run.model = estimate_model((run.people[a], run.people[b]) for a, b in sorted(pairs))
    estimated = time.perf_counter()
    probabilities = {
        p: score(run.people[p[0]], run.people[p[1]], run.model).probability for p in sorted(pairs)
    }
    scored = time.perf_counter()
    sizes = [len(b.ids) for b in run.blocks.values()]
    full = sum(b.full for b in run.blocks.values())
    notes = [
        f"records {len(dataset.attributes)}, people {len(run.people)}, keys per person"
        f" {statistics.mean(len(blocking_keys(p)) for p in run.people.values()):.1f}",
        f"blocks {len(run.blocks)}, largest {max(sizes)} ids (cap {cap}), full {full};"
        f" candidates per record mean {statistics.mean(per_record):.1f}, max {max(per_record)}"
        f" (limit {max_candidates}); candidate pairs {len(pairs)}",
        f"EM prior {run.model.prior:.4f}; index {indexed - started:.1f} s,"
        f" EM {estimated - indexed:.1f} s, scoring {len(pairs)} pairs {scored - estimated:.1f} s"
        f" ({(scored - estimated) / max(len(pairs), 1) * 1e6:.0f} us per score)",
    ]
    return Suggestions(probabilities, notes), run


def _splink_frame(dataset: Dataset) -> pd.DataFrame:
    frame = dataset.frame.reset_index()
    frame["cluster"] = frame["rec_id"].str.extract(r"^([^-]+-[^-]+)", expand=False)
    return frame


def run_splink(dataset: Dataset, with_ids: bool) -> Suggestions:
    """Splink with its documented FEBRL settings (DuckDB); without soc_sec_id unless `with_ids`."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    frame = _splink_frame(dataset)
    swapped_names = "l.given_name = r.surname and l.surname = r.given_name"
    if dataset.link_only:  # docs/demos/examples/duckdb/febrl4
        blocking = [
            block_on("given_name", "surname"),
            swapped_names,
            block_on("date_of_birth"),
            block_on("soc_sec_id"),
            block_on("state", "address_1"),
            block_on("street_number", "address_1"),
            block_on("postcode"),
        ]
        comparisons = [
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison(
                "date_of_birth",
                input_is_string=True,
                datetime_format="%Y%m%d",
                invalid_dates_as_null=True,
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(
                term_frequency_adjustments=True
            ),
        ]
        deterministic = [
            block_on("soc_sec_id"),
            block_on("given_name", "surname", "date_of_birth"),
        ]
        recall = 0.8
        link_type = "link_only"
    else:  # docs/demos/examples/duckdb/febrl3
        blocking = [
            block_on("soc_sec_id"),
            block_on("given_name"),
            block_on("surname"),
            block_on("date_of_birth"),
            block_on("postcode"),
        ]
        comparisons = [
            cl.NameComparison("given_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison(
                "date_of_birth", input_is_string=True, datetime_format="%Y%m%d"
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
        ]
        deterministic = [
            block_on("soc_sec_id"),
            block_on("given_name", "surname", "date_of_birth"),
            f"{swapped_names} and l.date_of_birth = r.date_of_birth",
        ]
        recall = 0.9
        link_type = "dedupe_only"
    if not with_ids:
        blocking = [b for b in blocking if "soc_sec_id" not in str(_rule_sql(b))]
        deterministic = [b for b in deterministic if "soc_sec_id" not in str(_rule_sql(b))]
        comparisons = comparisons[:3] + comparisons[4:]
    settings = SettingsCreator(
        unique_id_column_name="rec_id",
        link_type=link_type,
        blocking_rules_to_generate_predictions=blocking,
        comparisons=comparisons,
        retain_intermediate_calculation_columns=True,
    )
    started = time.perf_counter()
    db_api = DuckDBAPI()
    if dataset.link_only:
        tables = [
            db_api.register(frame[frame["source"] == s].drop(columns="source"), table_name=s)
            for s in ("a", "b")
        ]
        linker = Linker(tables, settings, log_level=logging.ERROR)
    else:
        linker = Linker(db_api.register(frame), settings, log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=recall)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=2)
    for rule in ("date_of_birth", "postcode"):
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on(rule), estimate_without_term_frequencies=True
        )
    predictions = linker.inference.predict(threshold_match_probability=0.001).as_pandas_dataframe()
    elapsed = time.perf_counter() - started
    probabilities = {
        pair(str(a), str(b)): float(p)
        for a, b, p in zip(
            predictions["rec_id_l"],
            predictions["rec_id_r"],
            predictions["match_probability"],
            strict=True,
        )
    }
    return Suggestions(probabilities, [f"{elapsed:.1f} s, {len(predictions)} pairs scored"])


def _rule_sql(rule: object) -> object:
    return rule if isinstance(rule, str) else rule.get_blocking_rule("duckdb").blocking_rule_sql  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Quality:
    """Precision, recall and F1 of a set of suggested pairs."""

    precision: float
    recall: float
    f1: float

    @classmethod
    def of(cls, suggested: set[Pair], truth: frozenset[Pair]) -> Quality:
        hits = len(suggested & truth)
        precision = hits / len(suggested) if suggested else 0.0
        recall = hits / len(truth)
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        return cls(precision, recall, f1)


def best_f1(probabilities: dict[Pair, float], truth: frozenset[Pair]) -> tuple[float, float]:
    """The best F1 over all thresholds, and the threshold reaching it (uses the labels)."""
    hits, best, at = 0, 0.0, 1.0
    for n, (p, prob) in enumerate(sorted(probabilities.items(), key=lambda i: -i[1]), start=1):
        hits += p in truth
        f1 = 2 * hits / (n + len(truth))
        if f1 > best:
            best, at = f1, prob
    return best, at


def search_hit_rate(run: CoreRun, dataset: Dataset) -> Iterator[str]:
    """Lines: share of duplicates whose original is in the top 5 by name + city; search times."""
    hits = unsearchable = 0
    times: list[float] = []
    originals = dataset.originals()
    for dup, original in sorted(originals.items()):
        attributes = dataset.attributes[dup]
        name = f"{attributes.get('first_name', '')} {attributes.get('last_name', '')}".strip()
        query = PersonQuery(name=name, city=str(attributes.get("city", "")))
        started = time.perf_counter()
        try:
            found = run.search(query, exclude=dup)
        except ValueError:
            unsearchable += 1
            continue
        times.append(time.perf_counter() - started)
        hits += original in found
    total = len(originals)
    times.sort()
    yield (
        f"search hit rate (original in top {SEARCH_TOP} by name + city): {hits / total:.1%}"
        f" of {total} duplicates ({unsearchable} without a name or city: counted as misses;"
        f" {hits / max(total - unsearchable, 1):.1%} of those searchable)"
    )
    yield (
        f"search time (keys, candidates, ranking) p50 {times[len(times) // 2] * 1e3:.2f} ms,"
        f" p99 {times[int(len(times) * 0.99)] * 1e3:.2f} ms"
    )


def score_time(run: CoreRun, pairs: int = 20_000) -> float:
    """Microseconds per `score` over random pairs of the dataset's people."""
    rng = random.Random(7)
    people = list(run.people.values())
    sample = [(rng.choice(people), rng.choice(people)) for _ in range(pairs)]
    started = time.perf_counter()
    for a, b in sample:
        score(a, b, run.model)
    return (time.perf_counter() - started) / pairs * 1e6


def _row(label: str, suggestions: Suggestions, dataset: Dataset, threshold: float) -> str:
    suggested = {p for p, prob in suggestions.probabilities.items() if prob >= threshold}
    q = Quality.of(suggested, dataset.true_pairs)
    best, at = best_f1(suggestions.probabilities, dataset.true_pairs)
    return (
        f"  {label:<26} {q.precision:9.3f} {q.recall:7.3f} {q.f1:7.3f}   {best:.3f} at p>={at:.3g}"
    )


def run_worker(
    dataset: Dataset, model: MatchModel | None, threshold: float, cap: int
) -> Suggestions:
    """The pairs a real worker on the embedded broker suggested (`bench.people_pipeline`)."""
    from bench.people_pipeline import run_pipeline

    probabilities, notes = run_pipeline(dataset, model, threshold, cap)
    return Suggestions(probabilities, notes)


def compare_on(
    name: str, with_ids: bool, threshold: float, cap: int, pipeline: tuple[str, ...] = ()
) -> None:
    """Print the comparison of the core and Splink on one dataset (see the module docstring);
    `pipeline` names the models ("em", "default") a real worker runs with as well."""
    dataset = load(name, with_ids)
    fields = "all fields (soc_sec_id as phone)" if with_ids else "names, birth date, address"
    kind = "link A-B" if dataset.link_only else "dedupe"
    print(f"\n{name.upper()} ({kind}, {len(dataset.true_pairs)} true pairs), {fields}", flush=True)
    core, run = run_core(dataset, cap=cap)
    workers = {
        label: run_worker(dataset, run.model if label == "em" else None, threshold, cap)
        for label in pipeline
    }
    splink = run_splink(dataset, with_ids)
    print(f"  {'at p >= ' + str(threshold):<26} precision  recall      F1   best F1 (labels)")
    print(_row("cardstream core", core, dataset, threshold))
    for label, worker in workers.items():
        print(_row(f"cardstream worker, {label}", worker, dataset, threshold))
    print(_row(f"Splink {version('splink')}", splink, dataset, threshold))
    for note in core.notes:
        print(f"  core: {note}")
    for label, worker in workers.items():
        for note in worker.notes:
            print(f"  worker ({label} model): {note}")
    print(f"  splink: {splink.notes[0]}")
    for line in search_hit_rate(run, dataset):
        print(f"  core: {line}")
    print(f"  core: score {score_time(run):.1f} us per pair (random pairs)")


def _typo(name: str, rng: random.Random) -> str:
    """`name` with two neighbouring letters swapped (past the first), as typed in a hurry."""
    if len(name) < 4:
        return name
    i = rng.randrange(1, len(name) - 1)
    return name[:i] + name[i + 1] + name[i] + name[i + 2 :]


def _percentiles(times: list[float]) -> str:
    times = sorted(times)
    return (
        f"p50 {times[len(times) // 2] * 1e3:.2f} ms, p99 {times[int(len(times) * 0.99)] * 1e3:.2f}"
        f" ms, max {times[-1] * 1e3:.2f} ms"
    )


def scale_check(n: int, cap: int, searches: int = 2_000) -> None:
    """Index `n` synthetic people; print block sizes and search / suggestion times and hits."""
    print(f"\nSCALE: {n:,} synthetic people (Faker pl_PL lists, Zipf-like), cap {cap}")
    started = time.perf_counter()
    people: dict[str, Person] = {}
    blocks: dict[str, Block] = {}
    for rec_id, attributes in synthetic_people(n):
        person = person_of(attributes)
        assert person is not None
        people[rec_id] = person
        for key in blocking_keys(person):
            blocks[key] = add_to_block(blocks.get(key), rec_id, cap)
    run = CoreRun(people, blocks, DEFAULT_MODEL, MAX_CANDIDATES)
    gc.collect()
    gc.freeze()  # millions of long-lived objects: keep collector pauses out of the timings
    print(f"  indexed in {time.perf_counter() - started:.0f} s: {len(blocks):,} keys")
    full = {k for k, b in blocks.items() if b.full}
    by_kind: dict[str, list[str]] = {}
    for key in full:
        by_kind.setdefault(key.split(":", 1)[0], []).append(key)
    sizes = sorted(len(b.ids) for b in blocks.values())
    kinds = ", ".join(f"{kind} {len(keys):,}" for kind, keys in sorted(by_kind.items()))
    print(
        f"  blocks: {len(full):,} full ({kinds}); ids per block"
        f" p50 {sizes[len(sizes) // 2]}, p99 {sizes[int(len(sizes) * 0.99)]}"
    )
    unreachable = sum(all(k in full for k in blocking_keys(p)) for p in people.values())
    print(f"  people whose every key is full (found by no look-up): {unreachable:,}")
    rng = random.Random(3)
    sample = rng.sample(sorted(people), searches)
    for label, typo in (("exact name", False), ("a typo in the last name", True)):
        hits, candidates, times = 0, [], []
        for rec_id in sample:
            p = people[rec_id]
            last = _typo(p.last_name, rng) if typo else p.last_name
            query = PersonQuery(name=f"{p.first_name} {last}", city=p.city)
            started = time.perf_counter()
            found = run.search(query)
            times.append(time.perf_counter() - started)
            candidates.append(len(run.candidates(search_keys(query), "")))
            hits += rec_id in found
        print(
            f"  search by name + city, {label}: own profile in top {SEARCH_TOP}"
            f" {hits / searches:.1%}; candidates scored mean {statistics.mean(candidates):.0f};"
            f" {_percentiles(times)}"
        )
    times = []
    for rec_id in sample:
        started = time.perf_counter()
        ids = run.candidates(blocking_keys(people[rec_id]), rec_id)
        suggest_duplicates(people[rec_id], ((i, people[i]) for i in ids), run.model, THRESHOLD)
        times.append(time.perf_counter() - started)
    print(
        f"  duplicate check of a changed profile (keys, candidates, scores): {_percentiles(times)}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("febrl4", "febrl3", "both"), default="both")
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    parser.add_argument("--cap", type=int, default=BLOCK_CAP)
    parser.add_argument(
        "--fields", choices=("all", "no-ids", "both"), default="both", help="with soc_sec_id or not"
    )
    parser.add_argument(
        "--scale", type=int, default=0, metavar="N", help="instead: index N synthetic people"
    )
    parser.add_argument(
        "--pipeline",
        choices=("em", "default", "both"),
        help="also feed the records through a real worker on an embedded broker, with the"
        " model the core estimated by EM (no labels) as its model file, its default model, or both",
    )
    args = parser.parse_args(argv)
    if args.scale:
        scale_check(args.scale, args.cap)
        return
    names = ("febrl4", "febrl3") if args.dataset == "both" else (args.dataset,)
    variants = {"all": (True,), "no-ids": (False,), "both": (True, False)}[args.fields]
    for name in names:
        for with_ids in variants:
            pipeline = {None: (), "both": ("em", "default")}.get(args.pipeline, (args.pipeline,))
            compare_on(name, with_ids, args.threshold, args.cap, pipeline)


if __name__ == "__main__":
    main()
