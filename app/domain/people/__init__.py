"""People: finding one person's several files by name, birth date and address.

Pure code for the staff search by person and for duplicate suggestions (issue 15):

* `person_of(attributes, phone) -> Person | None`: a profile's normalised personal fields;
* `blocking_keys(person)` / `search_keys(query)`: the short keys a profile is
  indexed under and a search looks up (`key → Block` of profile ids, capped:
  `add_to_block`, `remove_from_block`, `gather_candidates`);
* `score(a, b, model) -> Match`: per-field evidence and the match probability under
  a Fellegi-Sunter `MatchModel` (`DEFAULT_MODEL`, or `estimate_model` by EM);
* `rank_candidates` (search) and `suggest_duplicates` (a changed profile).

How a worker uses it (settings: block cap, e.g. 100; candidates per look-up,
e.g. 200; suggestion threshold, e.g. 0.5; the model as a JSON file):

* tables: `people` (profile id → `Person.to_json()`) and `person_blocks`
  (blocking key → `Block`). A profile's keys are not stored: `blocking_keys` of
  its stored Person gives them again.
* a profile's attributes changed: `new = person_of(card attributes, card phone)`;
  if it differs from the stored one, remove the id from the blocks of the keys
  it lost and add it to those of the keys it gained (ops keyed by blocking key,
  `add_to_block` / `remove_from_block`), store `new`, then
  `gather_candidates(blocks of blocking_keys(new), exclude=id, limit)`, read
  their Persons and publish `suggest_duplicates(new, candidates, model,
  threshold)` (with `Match.explain()` for staff). Suggestions only: nothing merges.
* `GET /search`: `search_keys(PersonQuery(...))` (ValueError → 400 with its
  message), `gather_candidates`, read their Persons, `rank_candidates`; the
  answer lists each candidate's `Match.evidence`. A search looks up about 30 keys
  and reads at most `limit` Persons.
* the model: estimated offline with `estimate_model` over candidate pairs of the
  stored people, or online by counting `compare(a, b).levels` of the pairs the
  worker scores and calling `estimate_from_levels` on the counts now and then.
"""

from app.domain.people.keys import (
    Block,
    add_to_block,
    blocking_keys,
    gather_candidates,
    remove_from_block,
    search_keys,
    sound,
)
from app.domain.people.levels import FIELDS, LEVELS, MISSING, Comparison, compare
from app.domain.people.model import (
    DEFAULT_MODEL,
    MatchModel,
    estimate_from_levels,
    estimate_model,
)
from app.domain.people.person import Person, PersonQuery, fold, person_of, query_person
from app.domain.people.scoring import (
    Candidate,
    FieldEvidence,
    Match,
    rank_candidates,
    score,
    suggest_duplicates,
)

__all__ = [
    "DEFAULT_MODEL",
    "FIELDS",
    "LEVELS",
    "MISSING",
    "Block",
    "Candidate",
    "Comparison",
    "FieldEvidence",
    "Match",
    "MatchModel",
    "Person",
    "PersonQuery",
    "add_to_block",
    "blocking_keys",
    "compare",
    "estimate_from_levels",
    "estimate_model",
    "fold",
    "gather_candidates",
    "person_of",
    "query_person",
    "rank_candidates",
    "remove_from_block",
    "score",
    "search_keys",
    "sound",
    "suggest_duplicates",
]
