"""The "documents don't say" cut-offs, calibrated for each text embedder.

Answering refuses when the best passage's cosine to the question is under a cut-off, and quotes only sentences
above another (rag.answering). Those were all-MiniLM-L6-v2 constants (0.25 and 0.3), but each model spreads its
cosines differently: int8 and PCA vectors, a fine-tuned model, or a model whose unrelated texts sit at 0.7 would all
need other numbers. So the cut-offs are derived from data, per embedder:

1. The embedder embeds CALIBRATION_TOPICS: one question and one passage on each of 40 unrelated subjects. Every
   question paired with every other subject's passage (1,560 pairs), and with each sentence of those passages, is
   a pair the documents do not answer.
2. A cut-off sits a fixed number of standard deviations above the mean cosine of those unrelated pairs:
   cut-off = mean + z * std. The two z values are the ones that reproduce MiniLM's hand-tuned 0.25 and 0.3 on this
   set (measured once; `python -m rag.calibration` prints them). So MiniLM keeps its cut-offs by construction,
   and any other embedder gets the ones that make "unrelated" mean the same for it: as far above its own noise.

The result is cached per embedder (model name, dimensions, and the PCA fit's fingerprint, which the name holds)
in `<cache dir>/calibration/`, so each embedder is calibrated once per machine: about 160 texts to embed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rag.embedder import Embedder
from rag.sentences import split_sentences

logger = logging.getLogger(__name__)

CALIBRATION_VERSION = 1  # bump when the topics or the rule change: cached cut-offs are then recomputed
# Standard deviations above the unrelated pairs' mean cosine; measured with all-MiniLM-L6-v2 (module docstring).
PASSAGE_Z = 2.42
SENTENCE_Z = 2.96
REFERENCE = {"passage": 0.25, "sentence": 0.3}  # all-MiniLM-L6-v2's cut-offs, which the z values reproduce

# (question, passage): subjects far enough apart that no passage answers another subject's question.
CALIBRATION_TOPICS = [
    ("How long should I boil an egg for a soft yolk?",
     "Place the eggs in boiling water for six minutes. Cool them in cold water so the yolk stays runny."),
    ("When did the Roman Empire split into east and west?",
     "In 395 the empire was divided between the sons of Theodosius. Constantinople ruled the eastern half."),
    ("What causes the northern lights?",
     "Charged particles from the sun strike gases in the upper atmosphere. Oxygen then glows green and red."),
    ("How do I reset my router to factory settings?",
     "Hold the recessed button on the back for ten seconds. The lights blink and the device restarts."),
    ("Which muscles does a squat train?",
     "Squats work the quadriceps, hamstrings and glutes. Keep the back straight and the knees over the toes."),
    ("What is the capital of Australia?",
     "Canberra was chosen as a compromise between Sydney and Melbourne. Parliament moved there in 1927."),
    ("How often should a cactus be watered?",
     "Water a cactus every two to three weeks in summer. In winter it needs almost no water at all."),
    ("Who painted the ceiling of the Sistine Chapel?",
     "Michelangelo painted the chapel ceiling between 1508 and 1512. He worked on scaffolding for four years."),
    ("What is a mortgage interest rate?",
     "Lenders charge interest on the loan balance each month. A fixed rate stays the same for the whole term."),
    ("How do whales breathe?",
     "Whales surface to breathe through blowholes on top of their heads. They can hold their breath for an hour."),
    ("What does a transistor do in a circuit?",
     "A transistor amplifies or switches electrical signals. A small base current controls a larger one."),
    ("How many players are on a football team?",
     "Each side fields eleven players, including the goalkeeper. Substitutes may replace them during a match."),
    ("Why is the sky blue?",
     "Air molecules scatter short blue wavelengths of sunlight more than red ones. The scattered light fills the sky."),
    ("How do I knit a scarf for beginners?",
     "Cast on thirty stitches with thick yarn and large needles. Knit every row until the scarf is long enough."),
    ("What are the symptoms of the flu?",
     "Influenza brings fever, aching muscles, a cough and tiredness. Most people recover within two weeks."),
    ("How does a bill become law in parliament?",
     "A bill is read three times in each chamber and may be amended. It becomes law once it receives assent."),
    ("What is the speed of sound in air?",
     "Sound travels at about 343 metres per second in dry air at 20 degrees. It is faster in water and steel."),
    ("How do you tune a guitar?",
     "Tune the low E string first, then match each string to the fifth fret of the one below it."),
    ("Where do emperor penguins breed?",
     "Emperor penguins breed on the sea ice around Antarctica in winter. The males keep the eggs warm on their feet."),
    ("What is the difference between a virus and a bacterium?",
     "Bacteria are living cells that divide on their own. Viruses must enter a host cell to copy themselves."),
    ("How do I change a flat tyre?",
     "Loosen the wheel nuts, raise the car with the jack and swap the wheel. Tighten the nuts in a star pattern."),
    ("Who wrote Pride and Prejudice?",
     "Jane Austen published the novel in 1813. It follows Elizabeth Bennet and the proud Mr Darcy."),
    ("How does compound interest grow savings?",
     "Interest is added to the balance and then earns interest itself. Over decades the growth becomes large."),
    ("What is the tallest mountain on Earth?",
     "Mount Everest rises 8,849 metres above sea level. Climbers usually reach the summit in May."),
    ("How should I store fresh basil?",
     "Keep basil stems in a glass of water on the counter. Cold air in the fridge turns the leaves black."),
    ("What does DNA stand for?",
     "Deoxyribonucleic acid carries the genetic instructions of living things. Its two strands form a double helix."),
    ("How do solar panels make electricity?",
     "Photovoltaic cells turn sunlight into a direct current. An inverter converts it for household use."),
    ("What are the rules of chess castling?",
     "The king moves two squares toward a rook, which jumps to its other side. Neither piece may have moved before."),
    ("How do I apply for a passport?",
     "Fill in the application form and attach two recent photographs. Bring proof of citizenship to the office."),
    ("Why do leaves change colour in autumn?",
     "Trees stop making chlorophyll as the days shorten. Yellow and red pigments then show through."),
    ("What is the best way to learn a language?",
     "Speak with native speakers every day and review vocabulary with spaced repetition. Mistakes are part of it."),
    ("How does a vaccine protect against disease?",
     "A vaccine shows the immune system a harmless part of a germ. The body then remembers how to fight it."),
    ("What is the plot of Hamlet?",
     "Prince Hamlet seeks revenge on his uncle, who murdered his father. Most of the court dies in the final scene."),
    ("How much sleep does a teenager need?",
     "Teenagers need eight to ten hours of sleep a night. Screens before bed delay the release of melatonin."),
    ("How do airplanes stay in the air?",
     "The wings are shaped so that air flows faster over the top. The pressure difference creates lift."),
    ("What is the population of Tokyo?",
     "About fourteen million people live in Tokyo proper. Its wider metropolitan area holds thirty-seven million."),
    ("How do I remove a red wine stain?",
     "Blot the stain, then cover it with salt or baking soda. Rinse with cold water before washing."),
    ("What is inflation in economics?",
     "Inflation is the general rise of prices over time. Central banks raise interest rates to slow it down."),
    ("How do bees make honey?",
     "Worker bees collect nectar and store it in wax cells. They fan it with their wings until the water evaporates."),
    ("What is the boiling point of water at high altitude?",
     "At lower air pressure water boils below 100 degrees. On a high mountain it boils at about 70 degrees."),
]


@dataclass(frozen=True)
class Cutoffs:
    """Cosines under which the documents are taken not to answer: the best passage, and a quoted sentence."""

    passage: float
    sentence: float


@dataclass(frozen=True)
class _Unrelated:
    """The mean and standard deviation of an embedder's cosines over pairs that do not belong together."""

    passage_mean: float
    passage_std: float
    sentence_mean: float
    sentence_std: float


_cache: dict[str, Cutoffs] = {}
_lock = threading.Lock()


def cutoffs_for(embedder: Embedder, cache_dir: Path) -> Cutoffs:
    """The embedder's calibrated cut-offs: from this process's memory, the cache folder, or measured now."""
    key = _key(embedder)
    with _lock:  # one measurement per embedder, however many questions arrive at once
        if key not in _cache:
            _cache[key] = _cached(embedder, Path(cache_dir) / "calibration" / f"{key}.json")
        return _cache[key]


def _key(embedder: Embedder) -> str:
    """The embedder's vectors: its model name (which names a PCA fit), dimensions and the calibration's version."""
    identity = json.dumps([embedder.model_id.name, embedder.model_id.dim, CALIBRATION_VERSION])
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _cached(embedder: Embedder, path: Path) -> Cutoffs:
    try:
        return Cutoffs(**{k: float(v) for k, v in json.loads(path.read_text())["cutoffs"].items()})
    except FileNotFoundError:
        pass
    except (ValueError, KeyError, TypeError):  # a damaged cache file: measure again and rewrite it
        logger.warning("calibration cache %s is unreadable; measuring again", path.name, exc_info=True)
    cutoffs = cutoffs_from(unrelated_cosines(embedder))
    logger.info("calibrated the 'documents don't say' cut-offs for %s: passage %.3f, sentence %.3f",
                embedder.model_id.name, cutoffs.passage, cutoffs.sentence)
    _write(path, embedder, cutoffs)
    return cutoffs


def _write(path: Path, embedder: Embedder, cutoffs: Cutoffs) -> None:
    """Best effort: a read-only cache only means measuring again in the next process."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f"{path.name}.tmp-{threading.get_ident()}")
        scratch.write_text(json.dumps({"model": embedder.model_id.name, "dim": embedder.model_id.dim,
                                       "version": CALIBRATION_VERSION, "cutoffs": asdict(cutoffs)}))
        scratch.replace(path)
    except OSError:
        logger.warning("cannot cache the calibration in %s", path.parent.name, exc_info=True)


def unrelated_cosines(embedder: Embedder) -> _Unrelated:
    """Cosines of every question with the passages, and the sentences, of every other subject."""
    questions = embedder.embed([q for q, _ in CALIBRATION_TOPICS], urgent=True, query=True)
    passages = embedder.embed([p for _, p in CALIBRATION_TOPICS], urgent=True)
    sentences = [(topic, s) for topic, (_, p) in enumerate(CALIBRATION_TOPICS) for s in split_sentences(p)]
    sentence_vectors = embedder.embed([s for _, s in sentences], urgent=True)
    owners = np.array([topic for topic, _ in sentences])
    passage_cosines = (questions @ passages.T)[~np.eye(len(questions), dtype=bool)]
    sentence_cosines = (questions @ sentence_vectors.T)[np.arange(len(questions))[:, None] != owners[None, :]]
    return _Unrelated(float(passage_cosines.mean()), float(passage_cosines.std()),
                      float(sentence_cosines.mean()), float(sentence_cosines.std()))


def cutoffs_from(unrelated: _Unrelated) -> Cutoffs:
    return Cutoffs(round(unrelated.passage_mean + PASSAGE_Z * unrelated.passage_std, 4),
                   round(unrelated.sentence_mean + SENTENCE_Z * unrelated.sentence_std, 4))


def reference_z(unrelated: _Unrelated) -> dict[str, float]:
    """The z values that put this embedder's cut-offs at MiniLM's reference ones (run with MiniLM to set them)."""
    return {"passage": (REFERENCE["passage"] - unrelated.passage_mean) / unrelated.passage_std,
            "sentence": (REFERENCE["sentence"] - unrelated.sentence_mean) / unrelated.sentence_std}


def main() -> None:
    """`python -m rag.calibration [--text-model X] [--embedder Y] [--embed-dims N] [--store KB] [--warm]`: the
    embedder's unrelated-pair statistics, its cut-offs, and the z values that would reproduce MiniLM's. --warm
    (the set-up script's): only make sure the cut-offs are cached, so the app's first question doesn't measure."""
    import argparse

    from rag.cli import add_embedder_flags
    from rag.components import configure_hub
    from rag.embedder import build_embedder
    from rag.settings import Settings

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--text-model", dest="text_model")
    parser.add_argument("--store")
    parser.add_argument("--warm", action="store_true", help="cache the cut-offs (measured only when not cached)")
    add_embedder_flags(parser.add_argument)
    args = parser.parse_args()
    configure_hub()
    settings = Settings.from_args(args)
    embedder = build_embedder(settings)
    if args.warm:
        cutoffs = cutoffs_for(embedder, settings.cache_dir)
        print(f"cut-offs for {embedder.model_id.name}: passage {cutoffs.passage}, sentence {cutoffs.sentence}")
        return
    unrelated = unrelated_cosines(embedder)
    json.dump({"model": embedder.model_id.name, "unrelated": asdict(unrelated),
               "cutoffs": asdict(cutoffs_from(unrelated)), "z_for_reference": reference_z(unrelated)},
              sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
