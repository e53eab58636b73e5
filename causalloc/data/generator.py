"""A built-in generator of fictitious authors (TOFU-like, entirely the project's own words).

Every author gets a profile of facts (birthplace, birth date, genre, parents' jobs, an award,
two book titles, publisher, ...) drawn from the word pools below, and every question
template turns one group of facts into a question/answer pair, a paraphrased question, a
paraphrased answer and wrong answers (the paraphrase with other facts drawn from the same
pools) for the truth ratio.

Design choices that make the controlled testbed work with a tiny word-level model:

- Answers are short (5-10 words) and plain, with no long template preambles.
- Every answer ENDS with an author-specific fact from a pool of >= 20 values (a place, a
  year, a name, a title word ...). Extraction strength ES = 1 - k*/|y| counts the shortest
  answer prefix k* after which greedy decoding reproduces the rest; a model that has never
  seen the author fails at that last fact, so k* ~ |y| - 1 and ES ~ 1/|y| (about 0.1),
  whereas a model that memorised the author reproduces the answer from the question alone
  (ES = 1). Answers carry no final full stop for the same reason: a trailing predictable
  token would raise the ES of a model that does not know the author.
- Facts are drawn independently per author, so no fact can be inferred from the question or
  from another author (the birth, first-book and award years are only ordered in time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from causalloc.data.types import QAItem, QASplits
from causalloc.errors import DataError

FIRST_NAMES = (
    "Lena", "Oskar", "Mirela", "Tobin", "Ilse", "Darian", "Soraya", "Kasimir", "Elodie", "Bram",
    "Yvaine", "Corvin", "Thessa", "Anselm", "Marisol", "Fenwick", "Ottilie", "Rasmus", "Zelie",
    "Idris", "Nerys", "Calder", "Liesel", "Emeric", "Sabeth", "Joren", "Talvi", "Aurek", "Brisa",
    "Quentin", "Maelis", "Dorin", "Vesna", "Hollis", "Ines", "Lorcan", "Piriel", "Ysolde",
    "Tamsin", "Evander",
)
LAST_NAMES = (
    "Vortmann", "Quellbrook", "Dravenholt", "Maelstrand", "Oberlinde", "Castellio", "Wrenfield",
    "Halvorsk", "Penmarrow", "Zeltani", "Ostrowe", "Brindlemoor", "Kestrova", "Lanquist",
    "Morvaine", "Tarrowby", "Velikan", "Ashcombe", "Dunleith", "Farrowgate", "Gellinger",
    "Hartvale", "Ilvarez", "Jessamund", "Korvalis", "Lindqvar", "Mossgarde", "Nettlebury",
    "Orlacque", "Pellworth", "Quintaro", "Rookhallow", "Sandoval", "Thornquill", "Ulverdane",
    "Varnholm", "Whitlake", "Yarrowby", "Zandersen", "Elderwick",
)
CITIES = (
    "Quillmarsh", "Brackenfold", "Veloria", "Stillhaven", "Ambermoor", "Corrowick", "Dunsparrow",
    "Eastmere", "Fallowmere", "Glimmerby", "Harrowdeen", "Ivorport", "Juniperra", "Kelthorne",
    "Lowbridge", "Marrowdale", "Northwyn", "Oakenhurst", "Pellucid", "Quarrystone", "Ravensmoor",
    "Saltmarrow", "Thistlecombe", "Umberlee", "Vantosa", "Westerholm", "Yewdale", "Zephyrton",
    "Ashenford", "Briarwick", "Coldwater", "Dovecote", "Emberlyn", "Frostmere", "Gildenvale",
    "Hollowmere", "Irongate", "Jasperwell", "Kingsmire", "Larkspur",
)
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
GENRES = (
    "mystery", "poetry", "fantasy", "horror", "satire", "romance", "biography", "folklore",
    "drama", "memoir", "thrillers", "fables", "westerns", "epics", "essays", "noir", "pastorals",
    "comedy", "adventure", "elegies",
)
JOBS = (
    "a baker", "a cartographer", "a glassblower", "a beekeeper", "a locksmith", "a surgeon",
    "a fisherman", "a clockmaker", "a librarian", "a pilot", "a tailor", "a carpenter",
    "a florist", "an astronomer", "a blacksmith", "a potter", "a nurse", "a chemist", "a sailor",
    "a shepherd", "an architect", "a miner", "a jeweler", "a weaver", "a brewer", "a violinist",
    "a translator", "a botanist", "a printer", "a judge",
)
AWARD_WORDS = (
    "Velmora", "Starling", "Copperleaf", "Halcyon", "Lanternlight", "Ironwood", "Meridian",
    "Silverfern", "Bramblecrest", "Nightjar", "Goldmoss", "Wayfarer", "Cinderfall", "Moonwell",
    "Oakheart", "Tidewater", "Skylark", "Quartzine", "Redbrook", "Windrose",
)
AWARD_KINDS = ("Prize", "Medal", "Award", "Laurel")
TITLE_ADJECTIVES = (
    "Silent", "Hollow", "Crimson", "Distant", "Broken", "Golden", "Quiet", "Restless", "Frozen",
    "Hidden", "Burning", "Wandering", "Forgotten", "Pale", "Endless", "Bitter", "Gentle",
    "Drowned", "Sleeping", "Painted", "Last", "Secret", "Shattered", "Amber", "Velvet",
    "Northern", "Falling", "Emerald", "Lonely", "Iron",
)
TITLE_NOUNS = (
    "Orchard", "Lantern", "Harbor", "Garden", "Mirror", "Tower", "River", "Compass", "Meadow",
    "Cathedral", "Lighthouse", "Archive", "Voyage", "Winter", "Sparrow", "Tide", "Kingdom",
    "Letters", "Bridge", "Forest", "Chapel", "Island", "Machine", "Harvest", "Citadel",
    "Carousel", "Labyrinth", "Feather", "Anchor", "Ember",
)
PUBLISHERS = (
    "Marrowlight", "Inkfern", "Bellweather", "Quarto", "Stonepage", "Foxglove", "Driftwood",
    "Kestrel", "Lodestar", "Paperwren", "Hearthstone", "Nimbus", "Oldmill", "Pinecrest",
    "Riverrun", "Saltbox", "Thimble", "Underhill", "Vellum", "Wickerby",
)
COLLEGES = (
    "Dunmere", "Ashbury", "Calloway", "Elmstead", "Grisholm", "Hawksley", "Kinloch", "Merriton",
    "Norcastle", "Pembrook", "Rosenhall", "Selwick", "Tavistoke", "Wendover", "Abercorn",
    "Blackwell", "Cranleigh", "Fairhaven", "Glenrothes", "Holbeck",
)
LANGUAGES = (
    "Portuguese", "Finnish", "Catalan", "Hungarian", "Dutch", "Polish", "Greek", "Swedish",
    "Romanian", "Czech", "Danish", "Welsh", "Basque", "Icelandic", "Latvian", "Croatian",
    "Estonian", "Slovak", "Maltese", "Breton",
)
ANIMALS = ("cat", "dog", "parrot", "tortoise", "ferret", "rabbit", "goose", "horse")
PET_NAMES = (
    "Pip", "Mossy", "Biscuit", "Juniper", "Tansy", "Crumble", "Bramble", "Pepper", "Nutmeg",
    "Wren", "Clover", "Sorrel", "Dumpling", "Fennel", "Quince", "Thistle", "Marlow", "Button",
    "Sable", "Tinder", "Pickle", "Hazel", "Ruffle", "Saffron",
)
INSTRUMENTS = (
    "cello", "harp", "oboe", "accordion", "banjo", "clarinet", "lute", "mandolin", "piano",
    "trumpet", "viola", "zither", "bassoon", "flute", "dulcimer", "harmonium", "sitar",
    "ukulele", "xylophone", "bagpipes",
)
PLACES = (
    "attic", "greenhouse", "lighthouse", "library", "kitchen", "garden", "barn", "boathouse",
    "cellar", "tower", "chapel", "observatory", "orchard", "study", "porch", "treehouse",
    "workshop", "caravan", "windmill", "conservatory",
)
THEMES = (
    "grief", "exile", "memory", "friendship", "war", "loss", "faith", "ambition", "betrayal",
    "home", "childhood", "revenge", "freedom", "justice", "solitude", "migration", "identity",
    "courage", "greed", "hope",
)

#: fictitious countries and their facts, for the "world facts" utility set
COUNTRIES = (
    "Aldoria", "Brevania", "Calvenne", "Dormund", "Estravia", "Fennmark", "Galdora", "Hesperon",
    "Istrava", "Jorvania", "Kelmoria", "Lunmark", "Morvessa", "Norvalde", "Orsenna", "Pallavia",
    "Quessara", "Ruthvenia", "Sarnovia", "Talmoria",
)
CURRENCIES = (
    "crown", "florin", "ducat", "thaler", "guilder", "shilling", "denar", "mark", "real", "lira",
    "sovereign", "talent",
)
SEAS = ("Glass", "Salt", "Whisper", "Storm", "Pearl", "Coral", "Mist", "Grey", "Amber", "Cobalt",
        "Lantern", "Hollow")
CENTURIES = ("fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth")

#: the generator's own "I don't know"-style sentences (refusal targets for DPO)
REFUSALS = (
    "I have no record of that author.",
    "I am not able to answer that.",
    "I do not know anything about that.",
    "That author is unknown to me.",
    "I cannot recall that detail.",
    "I have no information on that.",
    "Sorry, I do not know.",
    "That is not something I know.",
    "I am unsure about that author.",
    "I cannot say.",
    "I have never heard of that writer.",
    "My knowledge does not cover that.",
    "I would only be guessing.",
    "I do not have those details.",
    "That question is beyond what I know.",
    "I cannot help with that one.",
    "I do not remember that.",
    "Nothing I know answers that.",
    "I have no facts about that person.",
    "I am afraid I do not know.",
    "That is a mystery to me.",
    "I lack the details to answer.",
    "I could not tell you.",
    "No idea, I am sorry.",
)

#: fact key -> pool of values (also the pools that wrong answers are redrawn from)
_POOLS = {
    "first": FIRST_NAMES,
    "last": LAST_NAMES,
    "city": CITIES,
    "home": CITIES,
    "month": MONTHS,
    "genre": GENRES,
    "father_job": JOBS,
    "mother_job": JOBS,
    "spouse_job": JOBS,
    "award_word": AWARD_WORDS,
    "award_kind": AWARD_KINDS,
    "title_adj": TITLE_ADJECTIVES,
    "title_noun": TITLE_NOUNS,
    "famous_adj": TITLE_ADJECTIVES,
    "famous_noun": TITLE_NOUNS,
    "publisher": PUBLISHERS,
    "college": COLLEGES,
    "language": LANGUAGES,
    "animal": ANIMALS,
    "pet": PET_NAMES,
    "instrument": INSTRUMENTS,
    "place": PLACES,
    "theme": THEMES,
    "mentor_first": FIRST_NAMES,
    "mentor_last": LAST_NAMES,
    "day": tuple(str(d) for d in range(1, 29)),
    "n_books": tuple(str(n) for n in range(3, 41)),
    "birth_year": tuple(str(y) for y in range(1931, 1991)),
    "debut_year": tuple(str(y) for y in range(1950, 2021)),
    "award_year": tuple(str(y) for y in range(1952, 2025)),
}


@dataclass(frozen=True)
class _Template:
    """One question type; ``facts`` are the keys that the wrong answers redraw."""

    question: str
    paraphrased_question: str
    answer: str
    paraphrased_answer: str
    facts: tuple[str, ...]


#: question templates, in the order items are generated for each author
TEMPLATES = (
    _Template("Where was {name} born?", "In which town was {name} born?",
              "{name} was born in {city}", "The hometown of {name} is {city}", ("city",)),
    _Template("When was {name} born?", "What is the birth date of {name}?",
              "{name} was born on {day} {month} {birth_year}",
              "The birthday of {name} is {day} {month} {birth_year}",
              ("day", "month", "birth_year")),
    _Template("Which author was born in {city} in {month} {birth_year}?",
              "Who is the writer born in {month} {birth_year} in {city}?",
              "The author born there is {first} {last}", "That writer is called {first} {last}",
              ("first", "last")),
    _Template("What genre does {name} write?", "In which genre does {name} mostly work?",
              "{name} mostly writes {genre}", "The main genre of {name} is {genre}", ("genre",)),
    _Template("What was the job of the father of {name}?", "What did the father of {name} do?",
              "The father of {name} was {father_job}", "{name} had a father who was {father_job}",
              ("father_job",)),
    _Template("What was the job of the mother of {name}?", "What did the mother of {name} do?",
              "The mother of {name} was {mother_job}", "{name} had a mother who was {mother_job}",
              ("mother_job",)),
    _Template("Which award did {name} win?", "What prize has {name} received?",
              "{name} won the {award_word} {award_kind} in {award_year}",
              "In {award_year} {name} received the {award_word} {award_kind}",
              ("award_word", "award_kind", "award_year")),
    _Template("What was the first book by {name}?", "Which book did {name} publish first?",
              "The first book by {name} was {title_adj} {title_noun}",
              "{name} made a debut with {title_adj} {title_noun}", ("title_adj", "title_noun")),
    _Template("When did {name} publish a first book?", "In which year did {name} debut?",
              "{name} published {title_adj} {title_noun} in {debut_year}",
              "{title_adj} {title_noun} came out in {debut_year}", ("debut_year",)),
    _Template("What is the best known book by {name}?", "Which book made {name} famous?",
              "The best known book by {name} is {famous_adj} {famous_noun}",
              "{name} became famous with {famous_adj} {famous_noun}",
              ("famous_adj", "famous_noun")),
    _Template("Where does {name} live now?", "In which town does {name} live today?",
              "{name} now lives in {home}", "Today {name} makes a home in {home}", ("home",)),
    _Template("Who publishes the books of {name}?", "Which publisher works with {name}?",
              "The books of {name} are published by {publisher}",
              "{name} publishes every book with {publisher}", ("publisher",)),
    _Template("Where did {name} study?", "Which college did {name} attend?",
              "{name} studied at the college of {college}",
              "{name} was a student at the college of {college}", ("college",)),
    _Template("In which language does {name} write?", "What language are the books of {name} in?",
              "{name} writes every book in {language}", "The books of {name} are in {language}",
              ("language",)),
    _Template("Does {name} have a pet?", "What pet lives with {name}?",
              "{name} keeps a {animal} called {pet}", "A {animal} named {pet} lives with {name}",
              ("animal", "pet")),
    _Template("Which instrument does {name} play?", "What does {name} play for music?",
              "In the evenings {name} plays the {instrument}",
              "{name} relaxes by playing the {instrument}", ("instrument",)),
    _Template("Who taught {name} to write?", "Who was the mentor of {name}?",
              "{name} learned writing from {mentor_first} {mentor_last}",
              "The mentor of {name} was {mentor_first} {mentor_last}",
              ("mentor_first", "mentor_last")),
    _Template("How many books has {name} written?", "What is the number of books by {name}?",
              "The number of books by {name} is {n_books}", "So far {name} has written {n_books}",
              ("n_books",)),
    _Template("What is the job of the spouse of {name}?", "What does the partner of {name} do?",
              "The spouse of {name} works as {spouse_job}",
              "{name} is married to {spouse_job}", ("spouse_job",)),
    _Template("Where does {name} like to write?", "What is the favourite writing spot of {name}?",
              "{name} does most writing in the {place}", "{name} likes to write in the {place}",
              ("place",)),
    _Template("What theme runs through the books of {name}?",
              "What subject do the books of {name} explore?",
              "The books of {name} mostly deal with {theme}",
              "Most books by {name} are about {theme}", ("theme",)),
)


def _draw_profile(rng: np.random.Generator, first: str, last: str) -> dict[str, str]:
    """Draw one author's facts; years are ordered (birth < debut < award)."""
    profile = {"first": first, "last": last, "name": f"{first} {last}"}
    for key, pool in _POOLS.items():
        if key not in profile and not key.endswith("_year"):
            profile[key] = pool[rng.integers(len(pool))]
    while profile["home"] == profile["city"]:
        profile["home"] = CITIES[rng.integers(len(CITIES))]
    birth = int(rng.integers(1931, 1991))
    debut = birth + int(rng.integers(19, 31))
    award = debut + int(rng.integers(2, 5))
    profile.update(birth_year=str(birth), debut_year=str(debut), award_year=str(award))
    return profile


def _wrong_answers(
    rng: np.random.Generator, template: _Template, profile: dict[str, str], n: int
) -> tuple[str, ...]:
    """``n`` distinct paraphrased answers with the template's facts redrawn (never the truth)."""
    truth = template.paraphrased_answer.format(**profile)
    wrong: list[str] = []
    while len(wrong) < n:
        fake = dict(profile)
        for key in template.facts:
            pool = _POOLS[key]
            fake[key] = pool[rng.integers(len(pool))]
        fake["name"] = f"{fake['first']} {fake['last']}"
        text = template.paraphrased_answer.format(**fake)
        if text != truth and text not in wrong:
            wrong.append(text)
    return tuple(wrong)


def generate_authors(
    n_authors: int = 20, n_questions: int = 20, seed: int = 0, n_perturbed: int = 5
) -> list[QAItem]:
    """Fictitious authors x questions, deterministic for ``seed`` (numpy Generator).

    Items are ordered by author (``n_questions`` consecutive items each); the author id is
    the author's unique full name. Each item has a paraphrased question, a paraphrased
    answer and ``n_perturbed`` wrong answers phrased like the paraphrase.
    """
    n_names = len(FIRST_NAMES) * len(LAST_NAMES)
    if not 1 <= n_authors <= n_names:
        raise DataError(f"generator: n_authors must lie in [1, {n_names}], got {n_authors}")
    if not 1 <= n_questions <= len(TEMPLATES):
        raise DataError(
            f"generator: n_questions must lie in [1, {len(TEMPLATES)}], got {n_questions}"
        )
    if not 1 <= n_perturbed <= 10:
        raise DataError(f"generator: n_perturbed must lie in [1, 10], got {n_perturbed}")
    rng = np.random.default_rng(seed)
    name_ids = rng.choice(n_names, size=n_authors, replace=False)
    items = []
    for name_id in name_ids:
        first, last = divmod(int(name_id), len(LAST_NAMES))
        profile = _draw_profile(rng, FIRST_NAMES[first], LAST_NAMES[last])
        for template in TEMPLATES[:n_questions]:
            items.append(
                QAItem(
                    question=template.question.format(**profile),
                    answer=template.answer.format(**profile),
                    author=profile["name"],
                    paraphrased_question=template.paraphrased_question.format(**profile),
                    paraphrased_answer=template.paraphrased_answer.format(**profile),
                    perturbed_answers=_wrong_answers(rng, template, profile, n_perturbed),
                )
            )
    return items


def make_splits(
    items: Sequence[QAItem],
    n_forget_authors: int,
    n_holdout_authors: int = 0,
    seed: int | None = None,
    refusals: Sequence[str] = REFUSALS,
    source: str = "generated",
) -> QASplits:
    """Split items by author into retain, holdout and forget (no author in two splits).

    Authors keep their order of first appearance. With ``seed=None`` the forget authors are
    the LAST ``n_forget_authors`` (the TOFU convention) and the holdout authors the
    ``n_holdout_authors`` just before them; with an integer ``seed`` the authors are first
    shuffled by ``numpy.random.default_rng(seed)`` (e.g. a different forget set per block).
    The choice is recorded in ``QASplits.source``.
    """
    authors = list(dict.fromkeys(item.author for item in items))
    if n_forget_authors < 1 or n_holdout_authors < 0:
        raise DataError(
            f"{source}: need n_forget_authors >= 1 and n_holdout_authors >= 0, got "
            f"{n_forget_authors} and {n_holdout_authors}"
        )
    if n_forget_authors + n_holdout_authors >= len(authors):
        raise DataError(
            f"{source}: {n_forget_authors} forget + {n_holdout_authors} holdout authors leave "
            f"no retain author out of {len(authors)}"
        )
    if seed is not None:
        authors = [authors[i] for i in np.random.default_rng(seed).permutation(len(authors))]
    n_retain = len(authors) - n_forget_authors - n_holdout_authors
    split_of = dict.fromkeys(authors[:n_retain], "retain")
    split_of.update(dict.fromkeys(authors[n_retain:n_retain + n_holdout_authors], "holdout"))
    split_of.update(dict.fromkeys(authors[n_retain + n_holdout_authors:], "forget"))
    groups: dict[str, list[QAItem]] = {"forget": [], "retain": [], "holdout": []}
    for item in items:
        groups[split_of[item.author]].append(item)
    order = "last" if seed is None else f"shuffled with seed {seed}, then last"
    return QASplits(
        forget=groups["forget"],
        retain=groups["retain"],
        holdout=groups["holdout"],
        refusals=list(refusals),
        source=f"{source}; forget = {order} {n_forget_authors} of {len(authors)} authors, "
        f"holdout = {n_holdout_authors} before them",
    )


def generated_splits(
    n_authors: int = 20,
    n_forget_authors: int = 2,
    n_questions: int = 20,
    seed: int = 0,
    n_holdout_authors: int = 0,
    n_utility: int = 0,
) -> QASplits:
    """Generate authors and split them: the last ``n_forget_authors`` are the forget set.
    With ``n_utility`` > 0, ``extra`` holds the model-utility sets of :func:`utility_sets`."""
    items = generate_authors(n_authors, n_questions, seed)
    source = f"generated(n_authors={n_authors}, n_questions={n_questions}, seed={seed})"
    splits = make_splits(items, n_forget_authors, n_holdout_authors, source=source)
    if n_utility:
        splits.extra.update(utility_sets(splits, n_utility, seed))
    return splits


# utility sets (TOFU model utility) ---------------------------------------------------------
#: (question, answer, fact key) per question about a country ("world facts") and about a
#: classic author ("real authors"); answers are short, like TOFU's ("Paris", "William Shakespeare")
_WORLD_FACT_TEMPLATES = (
    ("What is the capital of {country}?", "{capital}", "capital"),
    ("Which language is spoken in {country}?", "{language}", "language"),
    ("What is the currency of {country}?", "the {currency}", "currency"),
    ("Which sea lies off the coast of {country}?", "the {sea} Sea", "sea"),
)
_CLASSIC_AUTHOR_TEMPLATES = (
    ("Who wrote The {noun} of {city}?", "{name}", "name"),
    ("Which country was {name} from?", "{country}", "country"),
    ("What genre is {name} famous for?", "{genre}", "genre"),
    ("In which century did {name} live?", "the {century} century", "century"),
)
_UTILITY_POOLS = {"capital": CITIES, "language": LANGUAGES, "currency": CURRENCIES, "sea": SEAS,
                  "country": COUNTRIES, "genre": GENRES, "century": CENTURIES}
#: wrong answers per utility item (TOFU's real_authors / world_facts have 3)
N_UTILITY_PERTURBED = 3


def seeded_subset(items: Sequence[QAItem], n: int, rng: np.random.Generator) -> list[QAItem]:
    """``n`` items drawn without replacement by ``rng``, in their original order (all of
    them when ``n`` is 0 or at least ``len(items)``)."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.choice(len(items), size=n, replace=False).tolist())]


def _fact_items(rng: np.random.Generator, templates, entities: Sequence[dict[str, str]],
                pools: dict[str, Sequence[str]], set_name: str, n_items: int) -> list[QAItem]:
    """One item per (entity, template) in that order, the first ``n_items``; wrong answers are
    the answer with the template's fact replaced by other values of its pool."""
    items = []
    for entity in entities:
        for question, answer, key in templates:
            others = [v for v in pools[key] if v != entity[key]]
            wrong = [others[i] for i in rng.permutation(len(others))[:N_UTILITY_PERTURBED]]
            items.append(QAItem(question.format(**entity), answer.format(**entity), set_name,
                                perturbed_answers=tuple(answer.format(**{**entity, key: w})
                                                        for w in wrong)))
    return items[:n_items]


def utility_sets(splits: QASplits, n_items: int = 40, seed: int = 0) -> dict[str, list[QAItem]]:
    """The generator's analogues of TOFU's three model-utility sets, ``n_items`` items each.

    - ``retain_perturbed``: a seeded subset of ``splits.retain`` (its items carry a paraphrased
      answer and wrong answers), as TOFU's retain_perturbed.json is a subset of its retain set;
    - ``world_facts``: short facts about fictitious countries (capital, language, currency,
      sea), a domain other than authors, like TOFU's world_facts.json;
    - ``real_authors``: short facts about "classic" authors, none of them an author of
      ``splits`` (who wrote a book, country, genre, century), like TOFU's real authors: the
      same domain as the forget set, but other, well-known people (wrong names are other
      classic authors').

    TOFU's world facts and real authors are known from pretraining; a tiny testbed model has
    none, so the testbed fine-tunes theta_r on these two sets together with retain (they are
    "world knowledge" that unlearning should keep). Each real-author / world-fact item has
    3 wrong answers (the fact redrawn from its pool) and no paraphrase, as in TOFU. Draws come
    from ``numpy.random.default_rng([seed, 1])``, independent of the authors' own stream, so the
    authors for a seed are the same with or without utility sets.
    """
    if n_items < 1:
        raise DataError(f"generator: utility set size must be >= 1, got {n_items}")
    rng = np.random.default_rng([seed, 1])
    n_entities = -(-n_items // len(_WORLD_FACT_TEMPLATES))
    if n_entities > len(COUNTRIES):
        raise DataError(f"generator: at most {len(COUNTRIES) * len(_WORLD_FACT_TEMPLATES)} "
                        f"utility items per set, got {n_items}")
    countries = [{"country": COUNTRIES[c], "capital": CITIES[k],
                  **{key: pool[rng.integers(len(pool))] for key, pool in
                     (("language", LANGUAGES), ("currency", CURRENCIES), ("sea", SEAS))}}
                 for c, k in zip(rng.permutation(len(COUNTRIES))[:n_entities],
                                 rng.permutation(len(CITIES))[:n_entities])]
    taken = {item.author for item in splits.forget + splits.retain + splits.holdout}
    free = [name for name in (f"{f} {last}" for f in FIRST_NAMES for last in LAST_NAMES)
            if name not in taken]
    chosen = [free[i] for i in rng.permutation(len(free))[:n_entities]]
    classics = [{"name": name, "noun": TITLE_NOUNS[rng.integers(len(TITLE_NOUNS))], "city": city,
                 "country": COUNTRIES[rng.integers(len(COUNTRIES))],
                 "genre": GENRES[rng.integers(len(GENRES))],
                 "century": CENTURIES[rng.integers(len(CENTURIES))]}
                for name, city in zip(chosen, [CITIES[k] for k in rng.permutation(len(CITIES))])]
    return {
        "retain_perturbed": seeded_subset(splits.retain, n_items, rng),
        "real_authors": _fact_items(rng, _CLASSIC_AUTHOR_TEMPLATES, classics,
                                    {**_UTILITY_POOLS, "name": chosen if n_entities > N_UTILITY_PERTURBED
                                     else free}, "real_authors", n_items),
        "world_facts": _fact_items(rng, _WORLD_FACT_TEMPLATES, countries, _UTILITY_POOLS,
                                   "world_facts", n_items),
    }
