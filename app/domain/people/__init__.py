"""People: finding one person's several files by name, birth date and address.

Pure code for the staff search by person and for duplicate suggestions (issue 15):

* `person_of(attributes) -> Person | None`: a profile's normalised personal fields;
* `blocking_keys(person)` / `search_keys(query)`: the short keys a profile is
  indexed under and a search looks up (a worker keeps `key → Block` of profile ids,
  capped: `add_to_block`, `remove_from_block`, `gather_candidates`);
* `score(a, b, model) -> Match`: per-field evidence and the match probability under
  a Fellegi-Sunter `MatchModel` (`DEFAULT_MODEL`, or `estimate_model` by EM);
* `rank_candidates` (search) and `suggest_duplicates` (a changed profile).
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
