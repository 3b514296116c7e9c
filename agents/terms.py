"""Terms: how text becomes comparable, so "six" meets "6", "Sundays" meets "Sunday", "rose" meets "rises".

Every check that compares an answer with the knowledge goes through these functions, on both sides:

- `words`: lower-cased word and number tokens; `content_words`: without stopwords;
- `stem`: the Snowball English stem, with irregular verb forms and plurals mapped to one form;
- `numbers_as_digits`: number words as digits ("twenty-two" -> "22", "2,340" -> "2340");
- `specifics`: the numbers and proper names of a text, the words a wrong answer usually gets wrong.

    >>> stem("Sundays") == stem("Sunday"), stem("rose") == stem("rises"), stem("founded") == stem("founding")
    (True, True, True)
    >>> numbers_as_digits("twenty-two years, every six minutes, 2,340 metres, the ninth of October")
    '22 years, every 6 minutes, 2340 metres, the 9 of October'
"""

from __future__ import annotations

import functools
import json
import re
import threading
from pathlib import Path

TOKENIZER_PATH = Path(__file__).parent / "assets" / "minilm-tokenizer.json"

WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*[A-Za-z]|[A-Za-z]|\d+(?:[.,/]\d+)*")
_NUMBER = re.compile(r"^\d+(?:[.,/]\d+)*$")

STOPWORDS = frozenset(
    """
    a an the and or but if then so of to in on at by for with from into onto about as is are was were be
    been being am do does did done have has had having it its it's this that these those there here what
    which who whom whose when where why how can could would should will shall may might must not no yes
    i you he she we they me him her us them my your his our their mine yours also very just only more
    most much many some any each every all both few other such own same than too s t don't let's tell
    explain describe please know learn question answer one two thing things something anything really
    well like get got make made use used using way ways sure great okay ok hope helps glad happy notes
    note teacher student say says said called
    """.split()
)

# Capitalised words that start sentences or are common, not proper names.
_COMMON_CAPITALS = STOPWORDS | set("first second third next finally step then after before".split())

# Irregular forms the stemmer leaves apart. "found" is missing on purpose: it is also "to found".
_IRREGULAR = dict(
    pair.split(":")
    for pair in """
    rose:rise risen:rise kept:keep built:build held:hold sold:sell taught:teach bred:breed fed:feed
    spun:spin grew:grow grown:grow flew:fly flown:fly drew:draw drawn:draw wrote:write written:write
    spoke:speak spoken:speak gave:give given:give took:take taken:take began:begin begun:begin ran:run
    came:come went:go gone:go led:lead told:tell thought:think brought:bring bought:buy caught:catch
    fought:fight won:win met:meet sat:sit stood:stand became:become chose:choose chosen:choose
    froze:freeze frozen:freeze hung:hang struck:strike wore:wear worn:wear tore:tear torn:tear
    shook:shake rode:ride ridden:ride fell:fall fallen:fall hid:hide hidden:hide laid:lay paid:pay
    sent:send spent:spend dug:dig stuck:stick swept:sweep bent:bend lit:light knew:know known:know
    grew:grow threw:throw thrown:throw wound:wind sank:sink sunk:sink men:man women:woman children:child
    feet:foot teeth:tooth mice:mouse geese:goose
    """.split()
)

IRREGULAR_FORMS = frozenset(_IRREGULAR)  # "bred", "held", "worn": past forms that do not end in -ed

MONTHS = "january february march april may june july august september october november december".split()
_CARDINALS = """
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen
    """.split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINALS = """
    zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth
    fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth
    """.split()
_UNITS = {w: i for i, w in enumerate(_CARDINALS)}
_TENS_VALUE = {w: 10 * i for i, w in enumerate(_TENS, 2)}
_ORDINAL_VALUE = {w: i for i, w in enumerate(_ORDINALS)} | {
    w.removesuffix("y") + "ieth": v for w, v in _TENS_VALUE.items()
}
# "one", "first" and "second" stay words unless they clearly count or date something: they are pronouns
# and sequence words more often than numbers ("the first step", "one of the boxes").
_PLAIN_CARDINALS = {w: v for w, v in _UNITS.items() if w != "one"} | _TENS_VALUE
_PLAIN_ORDINALS = {w: v for w, v in _ORDINAL_VALUE.items() if w not in ("first", "second", "zeroth")}

_NUMBER_WORD_RE = re.compile(
    r"\b(?:(?P<tens>" + "|".join(_TENS) + r")(?:[- ](?P<unit>" + "|".join(_CARDINALS[1:10]) + r"))?"
    r"|(?P<hundred>(?:a|one) hundred)"
    r"|(?P<plain>" + "|".join(sorted(_PLAIN_CARDINALS | _PLAIN_ORDINALS, key=len, reverse=True)) + r"))\b"
    r"|\b(?P<dated>first|second)(?= of (?:" + "|".join(MONTHS) + r")\b)"
    r"|(?P<lead>^|[.,;:] |\b(?:has|have|had|in|on|at|for|with|about|only|just|than|by|into) )"
    r"(?P<counted>one)"
    r"(?= (?!(?:of|another|by|or|and|to|is|was|who|that|which|with|in|at|on|for|hundred|thousand|more)\b)"
    r"[a-z]+)",
    re.IGNORECASE,
)


_SIMPLE = "|".join(sorted(_CARDINALS + _TENS, key=len, reverse=True))
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
# Two or more number words in a row: "two hundred and twelve", "eight hundred and forty thousand",
# "fourteen eighty-seven" (a year).
_COMPOUND = re.compile(
    rf"\b(?:{_SIMPLE}|a(?= hundred| thousand))"
    rf"(?:(?:[\s-]+and)?[\s-]+(?:{_SIMPLE}|hundred|thousand|million))+\b",
    re.IGNORECASE,
)


_FRACTION = re.compile(
    r"\b(?:(?P<one>a|one)|(?P<many>two|three|four))[\s-]+(?P<part>half|third|thirds|quarter|quarters|fifth|fifths)\b",
    re.IGNORECASE,
)
_PARTS = {"half": 2, "third": 3, "quarter": 4, "fifth": 5}


def _fraction_value(match: re.Match[str]) -> str:
    """ "a third" -> "1/3", "two thirds" -> "2/3" """
    top = 1 if match["one"] else _UNITS[match["many"].lower()]
    return f"{top}/{_PARTS[match['part'].lower().removesuffix('s')]}"


def _compound_value(match: re.Match[str]) -> str:
    words = [w for w in re.split(r"[\s-]+", match.group(0).lower()) if w != "and"]
    values = [1 if w == "a" else _UNITS.get(w, _TENS_VALUE.get(w, 0)) for w in words]
    if not any(w in _SCALES for w in words):
        groups: list[int] = []  # "forty two" is 42; "fourteen eighty-seven" is the year 1487
        for word, value in zip(words, values, strict=True):
            if groups and word in _UNITS and groups[-1] % 10 == 0 and groups[-1] >= 20 and value < 10:
                groups[-1] += value
            else:
                groups.append(value)
        if len(groups) == 2 and all(10 <= g <= 99 for g in groups):
            return str(groups[0] * 100 + groups[1])
        return " ".join(str(g) for g in groups)
    total = current = 0
    for word, value in zip(words, values, strict=True):
        if word == "hundred":
            current = max(current, 1) * 100
        elif word in _SCALES:
            total += max(current, 1) * _SCALES[word]
            current = 0
        else:
            current += value
    return str(total + current)


def _number_value(match: re.Match[str]) -> str:
    if match["tens"]:
        value = _TENS_VALUE[match["tens"].lower()] + (_UNITS[match["unit"].lower()] if match["unit"] else 0)
        return str(value)
    if match["hundred"]:
        return "100"
    if match["dated"]:
        return "1" if match["dated"].lower() == "first" else "2"
    if match["counted"]:
        return match["lead"] + "1"
    word = match["plain"].lower()
    return str(_PLAIN_CARDINALS.get(word, _PLAIN_ORDINALS.get(word)))


def numbers_as_digits(text: str) -> str:
    """Number words as digits and digits without separators, so every way of writing a number meets.

    >>> numbers_as_digits("Nineteen members, every six years, on the ninth, one hundred pennets; 9th")
    '19 members, every 6 years, on the 9, 100 pennets; 9'
    >>> numbers_as_digits("the first of April, the first step, one of them, one drell, forty-two")
    'the 1 of April, the first step, one of them, 1 drell, 42'
    >>> numbers_as_digits("two hundred and twelve, eight hundred and forty thousand, fourteen eighty-seven")
    '212, 840000, 1487'
    """
    text = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", r"\1", text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = _FRACTION.sub(_fraction_value, text)
    text = _COMPOUND.sub(_compound_value, text)
    text = _NUMBER_WORD_RE.sub(_number_value, text)
    return _MONTH_MAY.sub("Maymonth", text)  # the month, not the stopword "may"


_MONTH_MAY = re.compile(r"(?<=\d )May\b|(?<=of )May\b|\bMay(?= \d)|(?<=in )May\b")


def words(text: str) -> list[str]:
    """Lower-cased word and number tokens ("Korrin's" -> "korrin's", "2,340" stays one token)."""
    return [w.lower() for w in WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """Tokens that carry meaning: no stopwords, no one-letter words (digits always count)."""
    return [w for w in words(text) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]


_local = threading.local()


def _snowball() -> object:
    """This thread's stemmer: a Snowball stemmer keeps its word in instance state, so threads never share."""
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        import snowballstemmer

        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return stemmer


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """One form for a word's inflections: plurals, tenses, possessives ("Korrin's" -> "korrin")."""
    word = word.lower().removesuffix("'s").removesuffix("'").replace(",", "")
    if _NUMBER.match(word):
        return word
    word = _IRREGULAR.get(word, word)
    word = _british(word)
    return str(_snowball().stemWord(word))  # type: ignore[attr-defined]


def _british(word: str) -> str:
    """One spelling for British and American forms: "kilometers" meets "kilometres", "color" "colour".

    >>> [_british(w) for w in ("kilometers", "meter", "centers", "harbor", "colors", "four", "after")]
    ['kilometres', 'metre', 'centres', 'harbour', 'colours', 'four', 'after']
    """
    match = re.fullmatch(r"(.*(?:met|cent|lit|fib|theat|sab|spect))er(s?)", word)
    if match:
        return f"{match[1]}re{match[2]}"
    match = re.fullmatch(r"(.*(?:col|harb|hon|fav|lab|neighb|flav|hum|od|vap|rum|arm|behavi))or(s?)", word)
    if match and len(word) >= 5:
        return f"{match[1]}our{match[2]}"
    return word


def stems(text: str) -> list[str]:
    """The stems of a text's content words, numbers as digits, in order."""
    return [stem(w) for w in content_words(numbers_as_digits(text))]


def sentence_starts(text: str) -> set[int]:
    """Offsets of the words that open a sentence, a line or a list item (one pass over the text)."""
    starts: set[int] = set()
    at_start = True
    for match in re.finditer(r"[A-Za-z0-9]+|[.!?:\n]|[^\sA-Za-z0-9]", text):
        token = match.group(0)
        if token in (".", "!", "?", ":", "\n"):
            at_start = True
        elif token.isalnum():
            if at_start:
                starts.add(match.start())
                # "1." or "2)" before a word is a list marker: the word after it still opens the item
                at_start = token.isdigit() and text[match.end() : match.end() + 1] in (".", ")")
            continue
    return starts


def specifics(text: str) -> list[str]:
    """Numbers and proper names in a text, lower-cased, in order, without repeats.

    A proper name is a capitalised word that is not a common word. A capitalised word that starts a
    sentence is no evidence of a name ("Remember, ..."), so it counts only if it is capitalised again
    later in the text. A number that opens a line and is followed by "." or ")" is a list marker.

    >>> specifics("Remember: Korrin is the capital. 1. It was founded in 1487 by Queen Almeth of Korrin.")
    ['korrin', '1487', 'queen', 'almeth']
    """
    out: list[str] = []
    matches = list(WORD.finditer(text))
    starts = sentence_starts(text)
    mid_sentence_capitals = {m.group(0) for m in matches if m.start() not in starts}
    for match in matches:
        token = match.group(0)
        low = token.lower()
        if _NUMBER.match(token):
            if match.start() in starts and text[match.end() : match.end() + 1] in (".", ")"):
                continue  # a list marker such as "1." or "2)"
            candidate = token.replace(",", "")
        elif (
            token[0].isupper()
            and low not in _COMMON_CAPITALS
            and len(low) > 1
            and (token in mid_sentence_capitals or match.start() not in starts)
        ):
            candidate = low.removesuffix("'s")
        else:
            continue
        if candidate not in out:
            out.append(candidate)
    return out


@functools.lru_cache(maxsize=1)
def _common_words() -> frozenset[str]:
    """The whole words of the MiniLM WordPiece vocabulary (about 22,000 common English words)."""
    vocabulary = json.loads(TOKENIZER_PATH.read_text(encoding="utf-8"))["model"]["vocab"]
    return frozenset(w for w in vocabulary if w.isalpha() and w.islower())


def common_word(word: str) -> bool:
    """Whether a word is everyday English (in a 30,000-piece tokenizer's vocabulary as a whole word), not a
    name or a term of the domain: "new" and "glass" are, "saltglass", "drell" and "spanner" are not.

    >>> common_word("glass"), common_word("saltglass"), common_word("rings")
    (True, False, True)
    """
    word = word.lower().strip("'")
    vocabulary = _common_words()
    if "-" in word:  # "hand-tight": common when its parts are
        return all(common_word(part) for part in word.split("-") if part)
    return word in vocabulary or word.removesuffix("s") in vocabulary or word.removesuffix("es") in vocabulary
