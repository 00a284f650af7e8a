"""People: finding one person's several files by name, birth date and address.

Pure code for the staff search by person and for duplicate suggestions (issue 15):

* `person_of(attributes, phone) -> Person | None`: a profile's normalised personal fields;
* `blocking_keys(person)` / `search_keys(query)`: the short keys a profile is
  indexed under and a search looks up (`key → Block` of profile ids, capped:
  `add_to_block`, `remove_from_block`, `gather_candidates`);
* `score(a, b, model) -> Match`: per-field evidence and the match probability under
  a Fellegi-Sunter `MatchModel` (`DEFAULT_MODEL`, or `estimate_model` by EM);
* `rank_candidates` (search) and `suggest_duplicates` (a changed profile).

How the worker uses it (`app.pipeline.people`, `app.worker.agents.people`):

* tables: `people` (profile id → its Person) and `person_blocks` (blocking key →
  `IndexBlock`: the people under that key *with their Persons*, so the block's
  holder scores a newcomer against them without reading another partition).
  A profile's keys are not stored: `blocking_keys` of its stored Person gives them.
* a profile's card changed: `new = person_of(card attributes, card phone)`; if it
  differs from the stored one, the profile is dropped from the blocks of the keys
  it lost and put (with its new Person) in those it kept or gained; each block
  scores the newcomer against its other members and sends the pairs whose
  probability reaches the threshold to both profiles' duplicate lists.
  Suggestions only: nothing merges.
* `GET /search`: `search_keys(PersonQuery(...))` (ValueError → 400 with its
  message), the blocks of those keys, `candidates_of`, `rank_candidates`; the
  answer lists each candidate's `Match.evidence`. A search looks up about 30 keys.
* the model: estimated offline with `estimate_model` over candidate pairs of the
  stored people, or online by counting `compare(a, b).levels` of the pairs the
  worker scores and calling `estimate_from_levels` on the counts now and then.
"""

from app.domain.people.index import IndexBlock, candidates_of, drop_person, put_person
from app.domain.people.keys import (
    Block,
    add_to_block,
    blocking_keys,
    gather_candidates,
    keys_of,
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
    "IndexBlock",
    "Match",
    "MatchModel",
    "Person",
    "PersonQuery",
    "add_to_block",
    "blocking_keys",
    "candidates_of",
    "compare",
    "drop_person",
    "estimate_from_levels",
    "estimate_model",
    "fold",
    "gather_candidates",
    "keys_of",
    "person_of",
    "put_person",
    "query_person",
    "rank_candidates",
    "remove_from_block",
    "score",
    "search_keys",
    "sound",
    "suggest_duplicates",
]
