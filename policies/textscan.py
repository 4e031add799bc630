"""Phrase matching that survives a real model: normalised text, matched by stem, per language.

Why not a substring or whole-word regex: a model that writes "our lawyers", "collection
agencies", "suing", "garnished" or "legal-action" says exactly what the policy forbids, yet none
of those is the listed phrase. Text reaching a payer can also carry a zero-width space inside a
word, a Cyrillic "а" for a Latin "a", full-width letters or a soft hyphen, by accident (copy and
paste) or on purpose (a prompt injection asking the model to dodge the filter).

So both the phrases and the text go through one pipeline (:func:`fold`):

1. Unicode NFKC (full-width and compatibility forms become plain letters);
2. format characters removed (zero-width spaces and joiners, soft hyphens, bidi marks);
3. confusable characters mapped to the Latin letter they imitate (Unicode's confusables table, as
   shipped by ``confusable-homoglyphs``);
4. case-folded, accents removed;
5. everything that is not a letter or a digit becomes a space (hyphens, underscores, dots), and a
   run of single letters ("l e g a l") is joined back into its word.

Each phrase is stemmed with the Snowball stemmer of its own language (en, de, fr, es) and matched
against the text's words stemmed the same way, so plurals and verb forms match ("lawyers" and
"lawyer", "garnished" and "garnish"); a stem shorter than four letters matches only the word as
written, so short words list their forms ("sue", "sued", "suing"). A phrase written with a
leading ``=`` is never stemmed: for a word whose stem is an ordinary word of another language
(the Spanish "demandar" shares its stem with the French "demander", to ask). Words written
together or apart ("law suit", "legalaction") match too: up to three adjacent words are also
compared joined. A phrase is only ever stemmed in its own language. German compounds match by
their first part ("Inkassobüros" opens with "inkasso").
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from itertools import chain

import snowballstemmer

SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es")
_SNOWBALL = {"en": "english", "de": "german", "fr": "french", "es": "spanish"}
_MAX_JOIN = 3
_MIN_STEM = 4
_COMPOUNDING = {"de": 6}  # languages that write compounds as one word: min. head length
_WORD = re.compile(r"[^\W_]+")
#: Every ASCII character that ``_WORD`` does not match, as a space (``fold`` on ASCII text), as a
#: ``bytes.translate`` table: one C pass, where a ``str.translate`` mapping looked every character
#: up in a dictionary (most of ``fold``'s time on a draft).
_ASCII_NON_WORD = bytes(cp if cp < 128 and chr(cp).isalnum() else ord(" ") for cp in range(256))
#: Windows a matcher remembers per language (``PhraseMatcher.find_all``); emptied when full.
_MEMO_MAX = 4_096
#: Whole texts (their words as asked) a ``PhraseScan`` remembers; emptied when full.
_TEXTS_MAX = 1_024
_MISS = object()
#: What a word holding a non-letter is matched as where no key holds one (``find_all``).
_NON_LETTER = "0"


@cache
def _confusables() -> dict[int, str]:
    """Non-ASCII characters that imitate an ASCII letter or digit, mapped to it.

    Read once from the Unicode confusables table shipped in ``confusable-homoglyphs``; characters
    that are themselves letters with accents are left to the accent folding that follows.
    """
    raw = resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    table: dict[int, str] = {}
    for char, entries in json.loads(raw).items():
        if len(char) != 1 or char.isascii():
            continue
        targets = [e["c"] for e in entries if len(e["c"]) == 1 and e["c"].isascii()]
        letters = [t for t in targets if t.isalpha()] or [t for t in targets if t.isalnum()]
        if letters:
            table[ord(char)] = letters[0]
    return table


#: The Unicode planes with characters other than private use: planes 4-13 are unassigned and
#: 15-16 private use, so no format character or combining mark is there (a test checks this
#: Python's database). Scanning these five planes, not all seventeen, takes a quarter of the time
#: every process spends before its first draft is decided.
ASSIGNED_PLANES = (0, 1, 2, 3, 14)


@cache
def _tables() -> tuple[dict[int, str | None], dict[int, None]]:
    """``str.translate`` tables, built once per process from this Python's Unicode database:
    format characters removed and confusables mapped (one pass), and combining marks removed.

    Why tables: a test per character (``unicodedata.category``, ``combining``) on every draft
    of an Autopilot pass cost more than the rest of the guardrails' decision."""
    formats: dict[int, str | None] = {}
    combining: dict[int, None] = {}
    for cp in chain.from_iterable(range(p << 16, (p + 1) << 16) for p in ASSIGNED_PLANES):
        ch = chr(cp)
        if unicodedata.category(ch) == "Cf":
            formats[cp] = None
        if unicodedata.combining(ch):
            combining[cp] = None
    return {**_confusables(), **formats}, combining


def _strip_format(text: str) -> str:
    """Format characters removed and confusables mapped (``text`` already NFKC)."""
    return text if text.isascii() else text.translate(_tables()[0])


def _strip_accents(text: str) -> str:
    if text.isascii():  # nothing decomposes, nothing combines
        return text
    return unicodedata.normalize("NFKD", text).translate(_tables()[1])


def _join_spelled(words: list[str]) -> list[str]:
    """Runs of three or more single letters ("s u e", "l-e-g-a-l") joined into one word."""
    if list(map(len, words)).count(1) < 3:  # no run to join: most texts, cheaply
        return words
    out: list[str] = []
    run: list[str] = []
    for w in words + [""]:
        if len(w) == 1 and w.isalpha():
            run.append(w)
            continue
        if len(run) >= 3:
            out.append("".join(run))
        else:
            out.extend(run)
        run = []
        if w:
            out.append(w)
    return out


def fold(text: str) -> list[str]:
    """The words of ``text`` after normalisation (see the module docstring), in order."""
    text = unicodedata.normalize("NFKC", text or "")
    text = _strip_accents(_strip_format(text).casefold())
    if text.isascii():  # the same words, without the regular expression's cost per match
        ascii_text = text.encode("ascii").translate(_ASCII_NON_WORD).decode("ascii")
        return _join_spelled(ascii_text.split())
    return _join_spelled(_WORD.findall(text))


@lru_cache(maxsize=256)
def _folded(text: str) -> tuple[str, ...]:
    """``fold`` remembered for the last texts: a draft is scanned by several matchers."""
    return tuple(fold(text))


_local = threading.local()


def _stemmer(language: str) -> snowballstemmer.Stemmer:
    """This thread's stemmer for ``language``: a Snowball stemmer keeps the word it is working on
    in itself, so one shared by Autopilot's drafting threads corrupts (IndexError mid-word)."""
    stemmers: dict[str, snowballstemmer.Stemmer] = _local.__dict__.setdefault("stemmers", {})
    if language not in stemmers:
        stemmers[language] = snowballstemmer.stemmer(_SNOWBALL[language])
    return stemmers[language]


@lru_cache(maxsize=65_536)
def stem(language: str, word: str) -> str:
    """The key a folded word is matched by in ``language``: its Snowball stem, or the word.

    A stem shorter than four letters is ambiguous across languages (English "sued" and "suing"
    stem to "su", the Spanish "your"), so such words match only as written: list their forms.
    """
    # Digits only: no stemmer here changes a digit (their suffixes are letters), so the word is
    # its own stem; amounts and invoice numbers are new words in every draft.
    root = word if word.isdigit() else str(_stemmer(language).stemWord(word))
    return root if len(root) >= _MIN_STEM else "=" + word


@dataclass(frozen=True)
class Phrase:
    """One listed phrase: as written, its language and its stems."""

    text: str
    language: str
    stems: tuple[str, ...]
    joined: str  # the stem of its words written together


@dataclass(frozen=True)
class Hit:
    """A phrase found in a text, with the words of the text that matched it."""

    phrase: Phrase
    found: str


def _phrase(text: str, language: str) -> Phrase | None:
    exact = text.startswith("=")
    words = fold(text.lstrip("=").rstrip("*"))
    if not words:
        return None
    stems = tuple("=" + w if exact else stem(language, w) for w in words)
    if exact:
        return Phrase(text, language, stems, "=" + "".join(words))
    return Phrase(text, language, stems, stem(language, "".join(words)))


class PhraseMatcher:
    """Finds phrases (per language) in any text, by stem, after normalisation."""

    def __init__(self, phrases: Mapping[str, Iterable[str]]) -> None:
        unknown = sorted(set(phrases) - set(SUPPORTED_LANGUAGES))
        if unknown:
            raise ValueError(
                f"no stemmer for language(s) {unknown}: use one of {list(SUPPORTED_LANGUAGES)}"
            )
        self.by_language: dict[str, dict[str, list[Phrase]]] = {}
        self.joined: dict[str, dict[str, Phrase]] = {}
        self.heads: dict[str, set[str]] = {}
        self.letters_only: dict[str, bool] = {}
        self.letter_keys: dict[str, bool] = {}
        for language, texts in phrases.items():
            firsts: dict[str, list[Phrase]] = {}
            joined: dict[str, Phrase] = {}
            for text in texts:
                p = _phrase(text, language)
                if p is None:
                    continue
                firsts.setdefault(p.stems[0], []).append(p)
                joined.setdefault(p.joined, p)
            head = _COMPOUNDING.get(language)
            if head is not None:  # compound heads, under the key "" (see ``_at``)
                firsts[""] = [
                    p
                    for g in firsts.values()
                    for p in g
                    if len(p.stems) == 1 and len(p.joined) >= head and not p.joined.startswith("=")
                ]
            for group in firsts.values():
                group.sort(key=lambda p: -len(p.stems))  # the longest phrase first
            self.by_language[language] = firsts
            self.joined[language] = joined
            if head is not None:  # a compound's first ``head`` letters name its candidates
                self.heads[language] = {p.joined[:head] for p in firsts[""]}
            self.letters_only[language] = all(k.lstrip("=").isalpha() for k in joined)
            # Every key made of letters: a word holding a non-letter then matches nothing, not
            # even inside a phrase or a join (see ``find_all``).
            self.letter_keys[language] = self.letters_only[language] and all(
                k.lstrip("=").isalpha() for k in firsts if k
            )
        # What ``_at`` reads at word ``i`` is words[i : i + width] and nothing else (the longest
        # phrase, or the longest join), so its answer is remembered per such window.
        self.width = max(
            [_MAX_JOIN]
            + [len(p.stems) for f in self.by_language.values() for g in f.values() for p in g]
        )
        self._memo: dict[str, dict[tuple[str, ...], Hit | None]] = {
            language: {} for language in self.by_language
        }

    def __bool__(self) -> bool:
        return any(self.by_language.values())

    def find(self, text: str) -> Hit | None:
        """The first phrase found in ``text`` (in any of the phrases' languages), or None."""
        return next(iter(self.find_all(text, first_only=True)), None)

    def find_all(self, text: str, *, first_only: bool = False) -> list[Hit]:
        """Every phrase found in ``text``, in the order of the text."""
        words = _folded(text)
        # Words holding a digit (or another non-letter): no Snowball stemmer here adds or
        # removes one (their suffixes are letters), so a join of words holding one cannot stem
        # to a phrase made of letters; amounts and invoice numbers are new in every draft,
        # and stemming their joins was most of a decision's time.
        #
        # The answer at word ``i`` depends only on the window words[i : i + width] (``_at``
        # reads no further, and a window cut short by the end of the text is shorter), so it is
        # remembered per window: a draft's words are mostly those of earlier drafts, and most of
        # a decision's time went into asking ``_at`` the same question again.
        #
        # Where every key of a language is made of letters, a word holding a non-letter (an
        # amount, an invoice number, "payer3705") matches no key, starts no join and takes part
        # in no hit, whichever it is: such words are asked about as one placeholder, so a window
        # around a new invoice number is one seen before. Not where the word could open a
        # compound ("inkasso2024" opens with "inkasso"): those stay as written.
        width = self.width
        hits: list[Hit] = []
        plain: tuple[str, ...] | None = None
        for language, firsts in self.by_language.items():
            memo = self._memo[language]
            joined = self.joined[language]
            heads = self.heads.get(language)
            letters_only = self.letters_only[language]
            seq = words
            if self.letter_keys[language]:
                if heads is None:
                    if plain is None:
                        plain = tuple(w if w.isalpha() else _NON_LETTER for w in words)
                    seq = plain
                else:
                    head = _COMPOUNDING[language]
                    seq = tuple(
                        w if w.isalpha() or w[:head] in heads else _NON_LETTER for w in words
                    )
            for i in range(len(seq)):
                window = seq[i : i + width]
                hit = memo.get(window, _MISS)
                if hit is _MISS:
                    stems = [stem(language, w) for w in window]
                    skip = [not w.isalpha() for w in window] if letters_only else None
                    hit = _at(window, stems, 0, firsts, joined, language, heads, skip)
                    if len(memo) >= _MEMO_MAX:
                        memo.clear()
                    memo[window] = hit
                if hit is not None:
                    hits.append(hit)  # type: ignore[arg-type]
                    if first_only:
                        return hits
        return hits

    def answer(self, language: str, window: tuple[str, ...]) -> Hit | None:
        """The phrase of ``language`` found at the first word of ``window`` (the words as
        ``find_all`` asks about them, at most ``width`` of them), remembered like there."""
        memo = self._memo[language]
        hit = memo.get(window, _MISS)
        if hit is _MISS:
            stems = [stem(language, w) for w in window]
            skip = [not w.isalpha() for w in window] if self.letters_only[language] else None
            hit = _at(
                window,
                stems,
                0,
                self.by_language[language],
                self.joined[language],
                language,
                self.heads.get(language),
                skip,
            )
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[window] = hit
        return hit  # type: ignore[return-value]

    def as_asked(self, language: str, word: str) -> str:
        """``word`` as ``find_all`` asks about it in ``language`` (a placeholder or itself)."""
        if not self.letter_keys[language] or word.isalpha():
            return word
        heads = self.heads.get(language)
        if heads is not None and word[: _COMPOUNDING[language]] in heads:
            return word
        return _NON_LETTER


class PhraseScan:
    """Several matchers asked about one text in a single pass: what each one's ``find`` returns.

    Why: a draft is checked for legal threats and for concessions, each in four languages, and
    asking every matcher and language about every word window was most of a send decision's
    time. Here each window of the text is asked about once; the answer for every matcher and
    language together is remembered per window. A word holding a non-letter is asked about as
    the placeholder only where every matcher and language would ask about it so (see
    ``PhraseMatcher.find_all``), so each one's own window is a function of this window and the
    answers are exactly theirs.
    """

    def __init__(self, matchers: Sequence[PhraseMatcher]) -> None:
        self.matchers = tuple(matchers)
        self.pairs = [(m, language) for m in self.matchers for language in m.by_language]
        self.width = max([m.width for m in self.matchers] or [1])
        self.letter_keys = all(m.letter_keys[language] for m, language in self.pairs)
        # compound heads by their length: a word opening one is asked about as written
        self.heads: dict[int, set[str]] = {}
        for m, language in self.pairs:
            if language in m.heads:
                self.heads.setdefault(_COMPOUNDING[language], set()).update(m.heads[language])
        self._memo: dict[tuple[str, ...], tuple[Hit | None, ...]] = {}
        self._texts: dict[tuple[str, ...], tuple[Hit | None, ...]] = {}

    def _seq(self, words: tuple[str, ...]) -> tuple[str, ...]:
        if not self.letter_keys:
            return words
        if len(self.heads) == 1:  # one head length (German only): no generator per word
            ((n, hs),) = self.heads.items()
            return tuple([w if w.isalpha() or w[:n] in hs else _NON_LETTER for w in words])
        heads = self.heads.items()
        return tuple(
            [
                w if w.isalpha() or any(w[:n] in hs for n, hs in heads) else _NON_LETTER
                for w in words
            ]
        )

    def _answers(self, window: tuple[str, ...]) -> tuple[Hit | None, ...]:
        """Every matcher and language's answer at the first word of ``window`` (empty: none)."""
        answers = tuple(
            m.answer(language, tuple(m.as_asked(language, w) for w in window[: m.width]))
            for m, language in self.pairs
        )
        return answers if any(a is not None for a in answers) else ()

    def first(self, text: str) -> tuple[Hit | None, ...]:
        """For each matcher, in order, what ``matcher.find(text)`` returns.

        Remembered per text as asked about (its words, a placeholder for each word holding a
        non-letter): drafts written from one template differ in their amounts, invoice numbers,
        dates and links, which the placeholders hide, so the whole answer is known already.
        """
        seq = self._seq(_folded(text))
        known = self._texts.get(seq)
        if known is None:
            known = self._first(seq)
            if len(self._texts) >= _TEXTS_MAX:
                self._texts.clear()
            self._texts[seq] = known
        return known

    def _first(self, seq: tuple[str, ...]) -> tuple[Hit | None, ...]:
        """``first`` for a text's words as asked about, window by window."""
        width, memo = self.width, self._memo
        # every word's window (the last ones cut short by the end of the text), in C loops
        full = len(seq) - width + 1
        windows = list(zip(*(seq[k:] for k in range(width)), strict=False)) if full > 0 else []
        windows += [seq[i:] for i in range(max(full, 0), len(seq))]
        found = list(map(memo.get, windows))
        if None in found:  # windows not seen before: asked about, in the order of the text
            for i, window in enumerate(windows):
                if found[i] is None:
                    found[i] = answers = self._answers(window)
                    if len(memo) >= _MEMO_MAX:
                        memo.clear()
                    memo[window] = answers
        holding = [answers for answers in found if answers]  # windows holding a phrase
        if not holding:
            return (None,) * len(self.matchers)
        firsts: list[Hit | None] = [None] * len(self.pairs)
        for answers in holding:
            for k, hit in enumerate(answers):
                if hit is not None and firsts[k] is None:
                    firsts[k] = hit
        out: list[Hit | None] = []
        k = 0
        for m in self.matchers:  # a matcher's first language with a hit, at its first word
            n = len(m.by_language)
            out.append(next((h for h in firsts[k : k + n] if h is not None), None))
            k += n
        return tuple(out)


def _at(
    words: Sequence[str],
    stems: Sequence[str],
    i: int,
    firsts: Mapping[str, list[Phrase]],
    joined: Mapping[str, Phrase],
    language: str,
    heads: AbstractSet[str] | None = None,
    mixed: Sequence[bool] | None = None,
) -> Hit | None:
    """The phrase found at word ``i``: one starting with its stem (or the word as written), a
    compound opening with a listed word, or up to three words whose join is a listed phrase's.

    ``heads``: the compound heads' first letters (none of them: no compound to try);
    ``mixed``: which words hold a non-letter (joins with one are skipped, see ``find_all``).
    """
    word, key = words[i], stems[i]
    listed, exact = firsts.get(key), firsts.get("=" + word)
    if listed is not None or exact is not None:
        for p in [*(listed or ()), *(exact or ())]:
            n = len(p.stems)
            if _same(p.stems, words[i : i + n], stems[i : i + n]):
                return Hit(p, " ".join(words[i : i + n]))
    head = _COMPOUNDING.get(language)
    if head is not None and (heads is None or word[:head] in heads):
        for p in firsts.get("", ()):  # "Inkassobüros": a listed word opening a compound
            if word.startswith(p.joined):
                return Hit(p, word)
    found = joined.get(key)
    if found is not None:
        return Hit(found, word)
    for k in range(2, _MAX_JOIN + 1):
        if i + k > len(words) or (mixed is not None and (mixed[i] or mixed[i + k - 1])):
            break
        found = joined.get(stem(language, "".join(words[i : i + k])))
        if found is not None:
            return Hit(found, " ".join(words[i : i + k]))
    return None


def _same(keys: Sequence[str], words: Sequence[str], stems: Sequence[str]) -> bool:
    """Whether a phrase's keys match these words (an ``=`` key: the word as written)."""
    if len(words) != len(keys):
        return False
    pairs = zip(keys, words, stems, strict=True)
    return all((k == "=" + w) if k.startswith("=") else (k == s) for k, w, s in pairs)
