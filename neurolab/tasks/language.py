"""The non-math language task: short factual prompts whose next word is the answer.

MathNeuro needs a general-language control to tell math-specific weights from weights that matter for any text
(the paper uses RACE and MMLU). The embedded model cannot read real corpora, so it learns these small hand-written
tables: four relations of recall, the same kind of ability those benchmarks probe. Like factual recall in a real
LM, the facts are memorised, so the model card's accuracy is over all of them (there is nothing to generalise to).
MathNeuro splits them in two (:func:`neurolab.tasks.splits.language_split`): facts it may use as non-math samples,
and held-out facts its non-math accuracy is measured on, so it is never judged on the facts it protected.
"""

from __future__ import annotations

from dataclasses import dataclass

CAPITALS = {
    "france": "paris", "spain": "madrid", "italy": "rome", "germany": "berlin", "japan": "tokyo",
    "china": "beijing", "india": "delhi", "russia": "moscow", "egypt": "cairo", "kenya": "nairobi",
    "peru": "lima", "chile": "santiago", "cuba": "havana", "greece": "athens", "norway": "oslo",
    "sweden": "stockholm", "finland": "helsinki", "denmark": "copenhagen", "poland": "warsaw",
    "austria": "vienna", "hungary": "budapest", "portugal": "lisbon", "ireland": "dublin",
    "england": "london", "scotland": "edinburgh", "canada": "ottawa", "mexico": "mexico_city",
    "brazil": "brasilia", "argentina": "buenos_aires", "colombia": "bogota", "australia": "canberra",
    "turkey": "ankara", "iran": "tehran", "iraq": "baghdad", "syria": "damascus", "thailand": "bangkok",
    "vietnam": "hanoi", "korea": "seoul", "nepal": "kathmandu", "ghana": "accra", "nigeria": "abuja",
    "ethiopia": "addis_ababa", "morocco": "rabat", "tunisia": "tunis", "belgium": "brussels",
    "netherlands": "amsterdam", "switzerland": "bern", "czechia": "prague", "romania": "bucharest",
    "ukraine": "kyiv", "serbia": "belgrade", "croatia": "zagreb", "iceland": "reykjavik",
    "venezuela": "caracas", "bolivia": "la_paz", "uruguay": "montevideo", "pakistan": "islamabad",
    "bangladesh": "dhaka", "indonesia": "jakarta", "philippines": "manila",
}

OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "left": "right", "fast": "slow", "happy": "sad",
    "light": "dark", "open": "closed", "early": "late", "full": "empty", "hard": "soft", "high": "low",
    "long": "short", "old": "young", "rich": "poor", "strong": "weak", "thick": "thin", "wet": "dry",
    "loud": "quiet", "near": "far", "push": "pull", "win": "lose", "buy": "sell", "give": "take",
    "in": "out", "on": "off", "day": "night", "black": "white", "north": "south", "east": "west",
    "true": "false", "yes": "no", "love": "hate", "war": "peace", "start": "finish", "first": "last",
    "inside": "outside", "above": "below", "before": "after", "top": "bottom", "friend": "enemy",
    "clean": "dirty", "cheap": "expensive", "safe": "dangerous", "sweet": "sour", "heavy": "light",
    "wide": "narrow", "deep": "shallow", "sharp": "blunt", "brave": "afraid", "tall": "short",
    "laugh": "cry", "smooth": "rough", "asleep": "awake", "alive": "dead", "arrive": "leave",
    "accept": "refuse", "remember": "forget", "question": "answer", "always": "never",
}

COLORS = {
    "banana": "yellow", "lemon": "yellow", "sun": "yellow", "corn": "yellow", "butter": "yellow",
    "grass": "green", "leaf": "green", "frog": "green", "lime": "green", "pea": "green", "cucumber": "green",
    "sky": "blue", "sea": "blue", "ocean": "blue", "sapphire": "blue", "blueberry": "blue",
    "blood": "red", "cherry": "red", "tomato": "red", "strawberry": "red", "ruby": "red", "rose": "red",
    "snow": "white", "milk": "white", "cloud": "white", "salt": "white", "chalk": "white", "swan": "white",
    "coal": "black", "crow": "black", "ink": "black", "tar": "black", "raven": "black", "soot": "black",
    "orange": "orange", "carrot": "orange", "pumpkin": "orange", "tangerine": "orange", "apricot": "orange",
    "grape": "purple", "plum": "purple", "lavender": "purple", "violet": "purple", "eggplant": "purple",
    "chocolate": "brown", "coffee": "brown", "bark": "brown", "mud": "brown", "bear": "brown",
    "elephant": "gray", "ash": "gray", "rain": "gray", "mouse": "gray", "steel": "gray", "pig": "pink",
    "flamingo": "pink", "gold": "gold", "silver": "silver",
}

_SEQUENCES = (
    ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"),
    ("spring", "summer", "autumn", "winter"),
    ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t",
     "u", "v", "w", "x", "y", "z"),
    ("morning", "noon", "evening", "midnight"),
    ("seed", "sprout", "plant", "flower", "fruit"),
)

#: word -> the word that follows it in its sequence (days, months, seasons, letters ...), cyclic.
SUCCESSORS = {seq[i]: seq[(i + 1) % len(seq)] for seq in _SEQUENCES for i in range(len(seq))}

#: relation name -> (prompt template with one ``{x}`` field, table of x -> answer).
RELATIONS: dict[str, tuple[str, dict[str, str]]] = {
    "capital": ("capital of {x} is", CAPITALS),
    "opposite": ("opposite of {x} is", OPPOSITES),
    "color": ("color of {x} is", COLORS),
    "successor": ("after {x} comes", SUCCESSORS),
}


@dataclass(frozen=True)
class Fact:
    """One non-math prompt and its one-word answer."""

    relation: str
    prompt: str
    answer: str


def facts() -> list[Fact]:
    """Every fact of every relation, in a fixed order."""
    return [
        Fact(name, template.format(x=x), y)
        for name, (template, table) in RELATIONS.items()
        for x, y in table.items()
    ]


def words() -> list[str]:
    """Every word the task uses, for the embedded tokenizer's vocabulary (sorted, so the vocabulary is stable)."""
    found: set[str] = set()
    for fact in facts():
        found.update(fact.prompt.split())
        found.add(fact.answer)
    return sorted(found)
