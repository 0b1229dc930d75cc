"""A self-written English sentence corpus: a small grammar and lexicon, expanded with a seeded RNG.

Every word and template here was written for this project (no outside text), so the corpus is free
to ship. Sentences keep capitalization and punctuation the way v3's output writes them: a capital
first letter, capitalized names and places, commas, and a final period, question mark or
exclamation mark.

    uv run python training/sentence_corpus.py 5      # print five sentences
"""

from __future__ import annotations

import random
import sys

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack",
         "Laura", "Martin", "Nora", "Oscar", "Paula", "Peter", "Rosa", "Sam", "Tom", "Vera"]
PLACES = ["London", "Paris", "Berlin", "Boston", "Denver", "Dublin", "Madrid", "Oslo", "Rome",
          "Seattle", "Sydney", "Tokyo", "Toronto", "Vienna"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NOUNS = ["book", "car", "dog", "cat", "house", "garden", "letter", "phone", "window", "door",
         "table", "chair", "river", "bridge", "train", "bus", "ticket", "map", "key", "box",
         "bottle", "cup", "plate", "kitchen", "office", "school", "teacher", "doctor", "student",
         "friend", "neighbor", "child", "farmer", "driver", "singer", "painter", "baker", "lamp",
         "computer", "camera", "picture", "song", "story", "meeting", "report", "plan", "idea",
         "question", "answer", "problem", "bird", "horse", "tree", "flower", "apple", "bread",
         "coffee", "water", "shirt", "coat", "hat", "bag", "road", "street", "city", "village",
         "market", "shop", "museum", "park", "beach", "island", "mountain", "forest", "lake",
         "boat", "plane", "clock", "radio", "paper", "pencil", "game", "team", "party", "dinner"]
ADJECTIVES = ["old", "new", "small", "large", "red", "blue", "green", "yellow", "quiet", "noisy",
              "bright", "dark", "warm", "cold", "heavy", "light", "young", "happy", "tired",
              "busy", "empty", "famous", "strange", "simple", "careful", "clever", "gentle",
              "broken", "clean", "wooden", "early", "late", "long", "short", "tall", "friendly"]
PAST_VERBS = ["found", "lost", "bought", "sold", "painted", "opened", "closed", "cleaned",
              "fixed", "carried", "visited", "moved", "watched", "followed", "borrowed",
              "washed", "checked", "picked", "dropped", "built", "brought", "wanted", "liked",
              "saw", "took", "gave", "kept", "left", "read", "wrote"]
BASE_VERBS = ["find", "buy", "sell", "paint", "open", "close", "clean", "fix", "carry", "visit",
              "move", "watch", "follow", "borrow", "wash", "check", "pick", "build", "bring",
              "see", "take", "keep", "read", "write"]
INTRANSITIVE_PAST = ["arrived", "laughed", "waited", "slept", "worked", "smiled", "stayed",
                     "danced", "walked", "returned", "left", "called", "sang", "cooked"]
PREPOSITIONS = ["near", "behind", "under", "beside", "inside", "across", "past", "around", "above"]
ADVERBS = ["quickly", "slowly", "quietly", "early", "later", "again", "today", "yesterday",
           "carefully", "together"]
TIMES = ["in the morning", "in the evening", "at night", "after lunch", "before dinner",
         "last week", "this year", "every day", "at noon", "on time"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve",
           "twenty"]
FEELINGS = ["glad", "sure", "surprised", "sorry", "worried", "certain"]


def plural(noun: str) -> str:
    if noun == "child":
        return "children"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


class SentenceGrammar:
    """Templates over the lexicon; `sentence()` draws one sentence with the given RNG."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.templates = [self.statement, self.statement, self.with_place, self.question,
                          self.exclamation, self.reported, self.compound, self.request,
                          self.counting, self.when_clause]

    def pick(self, words: list[str]) -> str:
        return self.rng.choice(words)

    def noun_phrase(self) -> str:
        roll = self.rng.random()
        if roll < 0.25:
            return self.pick(NAMES)
        article = self.pick(["the", "the", "a", "my", "our", "their", "this"])
        adjective = f"{self.pick(ADJECTIVES)} " if roll < 0.7 else ""
        noun_phrase = f"{article} {adjective}{self.pick(NOUNS)}"
        return noun_phrase.replace("a old", "an old").replace("a early", "an early").replace(
            "a empty", "an empty")

    def place(self) -> str:
        if self.rng.random() < 0.4:
            return f"in {self.pick(PLACES)}"
        return f"{self.pick(PREPOSITIONS)} the {self.pick(NOUNS)}"

    def clause(self) -> str:
        if self.rng.random() < 0.3:
            return f"{self.noun_phrase()} {self.pick(INTRANSITIVE_PAST)} {self.pick(ADVERBS)}"
        return f"{self.noun_phrase()} {self.pick(PAST_VERBS)} {self.noun_phrase()}"

    def statement(self) -> str:
        tail = f" {self.pick(TIMES)}" if self.rng.random() < 0.5 else ""
        return f"{self.clause()}{tail}."

    def with_place(self) -> str:
        return f"{self.clause()} {self.place()} on {self.pick(DAYS)}."

    def question(self) -> str:
        subject = self.noun_phrase()
        form = self.rng.randrange(3)
        if form == 0:
            return f"did {subject} {self.pick(BASE_VERBS)} {self.noun_phrase()} {self.pick(TIMES)}?"
        if form == 1:
            return f"where did {subject} {self.pick(BASE_VERBS)} {self.noun_phrase()}?"
        return f"why is {subject} so {self.pick(ADJECTIVES)} {self.pick(ADVERBS)}?"

    def exclamation(self) -> str:
        return f"what a {self.pick(ADJECTIVES)} {self.pick(NOUNS)} that was, {self.pick(NAMES)}!"

    def reported(self) -> str:
        return f"{self.pick(NAMES)} said that {self.clause()}."

    def compound(self) -> str:
        joiner = self.pick(["and", "but", "so", "because"])
        return f"{self.clause()}, {joiner} {self.clause()}."

    def request(self) -> str:
        return (f"please {self.pick(BASE_VERBS)} {self.noun_phrase()} {self.place()}, "
                f"{self.pick(NAMES)}.")

    def counting(self) -> str:
        return (f"we {self.pick(PAST_VERBS)} {self.pick(NUMBERS)} {plural(self.pick(NOUNS))} "
                f"{self.place()} {self.pick(TIMES)}.")

    def when_clause(self) -> str:
        return (f"when {self.clause()}, I was {self.pick(FEELINGS)} that "
                f"{self.clause()}.")

    def sentence(self) -> str:
        text = self.pick(self.templates)()
        return text[0].upper() + text[1:]


def distinct_sentences(count: int, seed: int, min_words: int = 5, max_words: int = 24) -> list[str]:
    """`count` distinct sentences in draw order (same seed, same list)."""
    rng = random.Random(seed)
    grammar = SentenceGrammar(rng)
    seen: dict[str, None] = {}
    while len(seen) < count:
        text = grammar.sentence()
        if min_words <= len(text.split()) <= max_words:
            seen.setdefault(text)
    return list(seen)


if __name__ == "__main__":
    for line in distinct_sentences(int(sys.argv[1]) if len(sys.argv) > 1 else 10, seed=1):
        print(line)
