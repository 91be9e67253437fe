"""`token_ner`: named entities by per-token classification over BILUO tags, decoded under constraints.

spaCy's transition-based `ner` makes a small GPU call and a device-to-host copy per transition; this
component scores every token of a batch in one matrix product (a softmax layer on the tok2vec or
transformer output, spaCy's `spacy.Tagger.v2` architecture) and then decodes the best *valid* BILUO
sequence of each document with a batched Viterbi pass on the CPU. It writes `doc.ents`, scores with
spaCy's `ents` scorer and serialises like any trainable pipe.

This file imports only spaCy, thinc and numpy, so that `spacy package --code` can ship it alone.
No `from __future__ import annotations`: spaCy validates `initialize` arguments from real types.
"""

from itertools import islice
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import catalogue
import numpy
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, SequenceCategoricalCrossentropy, get_array_module, set_dropout_rate

DEFAULT_MODEL = """
[model]
@architectures = "spacy.Tagger.v2"
nO = null
normalize = false

[model.tok2vec]
@architectures = "spacy.HashEmbedCNN.v2"
pretrained_vectors = null
width = 96
depth = 4
embed_size = 2000
window_size = 1
maxout_pieces = 3
subword_features = true
"""
NEG_INF = -1e9


class TokenNER(TrainablePipe):
    """Per-token BILUO classifier that writes `doc.ents`."""

    def __init__(self, vocab: Vocab, model: Model, name: str = "token_ner", *, learn_rate_scale: float = 1.0,
                 scorer: Optional[Callable] = None):
        self.vocab, self.model, self.name = vocab, model, name
        self.cfg: Dict[str, list] = {"labels": []}
        self.learn_rate_scale = learn_rate_scale
        self.scorer = scorer
        self._decoder: Optional[_BiluoDecoder] = None

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self.cfg["labels"])

    @property
    def tag_names(self) -> List[str]:
        """The classes the softmax predicts: O, then B/I/L/U for each label."""
        return ["O"] + [f"{p}-{label}" for label in self.labels for p in "BILU"]

    def add_label(self, label: str) -> int:
        if not isinstance(label, str):
            raise ValueError(f"entity labels are strings, not {label!r}")
        if label in self.labels:
            return 0
        self._require_untrained_output_layer()
        self.cfg["labels"].append(label)
        self._decoder = None
        return 1

    def _require_untrained_output_layer(self) -> None:
        if self.model.has_dim("nO"):  # a trained output layer cannot grow here
            raise ValueError(f"{self.name}: cannot add a label to a trained model")

    @property
    def decoder(self) -> "_BiluoDecoder":
        if self._decoder is None:
            self._decoder = _BiluoDecoder(self.tag_names)
        return self._decoder

    def predict(self, docs: Iterable[Doc]) -> List[numpy.ndarray]:
        """The best valid BILUO tag ids of each doc."""
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            return [numpy.zeros((len(doc),), dtype="i") for doc in docs]
        scores = self.model.predict(docs)
        xp = get_array_module(scores[0])
        flat = self.model.ops.to_numpy(xp.concatenate(scores)) if len(scores) > 1 else self.model.ops.to_numpy(scores[0])
        return self.decoder.decode(flat, [len(doc) for doc in docs], probabilities=self._outputs_probabilities())

    def _outputs_probabilities(self) -> bool:
        """spacy.Tagger.v2 with `normalize = false` predicts logits: cheaper, and Viterbi needs no softmax."""
        if self.model.has_ref("output_layer"):
            return bool(self.model.get_ref("output_layer").attrs.get("softmax_normalize", True))
        return True

    def set_annotations(self, docs: Iterable[Doc], tag_ids: Sequence[numpy.ndarray]) -> None:
        names = self.tag_names
        for doc, ids in zip(docs, tag_ids):
            doc.set_ents(_spans_from_biluo(doc, [names[i] for i in ids]), default="outside")

    def get_loss(self, examples: Iterable[Example], scores: List) -> Tuple[float, List]:
        validate_examples(examples, "TokenNER.get_loss")
        loss_func = SequenceCategoricalCrossentropy(names=self.tag_names, normalize=False)
        truths = [[tag if tag not in ("-", "") else None for tag in eg.get_aligned_ner()] for eg in examples]
        d_scores, loss = loss_func(scores, truths)
        if self.model.ops.xp.isnan(loss):
            raise ValueError(f"{self.name}: the loss is NaN")
        return float(loss), d_scores

    def initialize(self, get_examples: Callable[[], Iterable[Example]], *, nlp: Optional[Language] = None,
                   labels: Optional[Sequence[str]] = None) -> None:
        validate_get_examples(get_examples, "TokenNER.initialize")
        if labels is None:
            labels = sorted({ent.label_ for eg in get_examples() for ent in eg.reference.ents})
        for label in labels:
            self.add_label(label)
        if not self.labels:
            raise ValueError(f"{self.name}: the training data holds no entities, so there is nothing to learn")
        names = self.tag_names
        doc_sample, label_sample = [], []
        for example in islice(get_examples(), 10):
            doc_sample.append(example.x)
            gold = example.get_aligned_ner()
            label_sample.append(self.model.ops.asarray(
                [[1.0 if tag == name else 0.0 for name in names] for tag in gold], dtype="float32"))
        self.model.initialize(X=doc_sample, Y=label_sample)

    def update(self, examples: Iterable[Example], *, drop: float = 0.0, sgd: Optional[Optimizer] = None,
               losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "TokenNER.update")
        if not any(len(eg.predicted) for eg in examples):
            return losses
        set_dropout_rate(self.model, drop)
        scores, backprop = self.model.begin_update([eg.predicted for eg in examples])
        loss, d_scores = self.get_loss(examples, scores)
        backprop(d_scores)
        if sgd not in (None, False):
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def finish_update(self, sgd: Optimizer) -> None:
        """Update this component's own weights at `learn_rate_scale` times the optimizer's rate.

        The softmax layer starts from zeros and, at a rate made for fine-tuning the transformer, needs
        hundreds of steps before its entity logits outgrow the bias towards O. (The transformer's
        weights are updated by the transformer component, at the plain rate.)
        """
        rate = sgd.learn_rate
        sgd.learn_rate = rate * self.learn_rate_scale
        try:
            self.model.finish_update(sgd)
        finally:
            sgd.learn_rate = rate

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()):
        self._decoder = None
        return super().from_bytes(bytes_data, exclude=exclude)

    def from_disk(self, path, *, exclude=tuple()):
        self._decoder = None
        return super().from_disk(path, exclude=exclude)


def _spans_from_biluo(doc: Doc, tags: Sequence[str]) -> List[Span]:
    spans, start = [], 0
    for i, tag in enumerate(tags):
        prefix = tag[0]
        if prefix == "B":
            start = i
        elif prefix == "L":
            spans.append(Span(doc, start, i + 1, tag[2:]))
        elif prefix == "U":
            spans.append(Span(doc, i, i + 1, tag[2:]))
    return spans


class _BiluoDecoder:
    """Batched Viterbi over BILUO tags: only sequences that spell whole entities can come out."""

    def __init__(self, names: Sequence[str]) -> None:
        prefix = [name[0] for name in names]
        label = [name[2:] for name in names]
        n = len(names)
        allowed = numpy.zeros((n, n), dtype=bool)  # [previous, current]
        for a in range(n):
            for b in range(n):
                if prefix[a] in "BI":  # inside an entity: go on or close it, same label
                    allowed[a, b] = prefix[b] in "IL" and label[a] == label[b]
                else:  # outside: O, or open an entity
                    allowed[a, b] = prefix[b] in "OBU"
        self.transitions = numpy.where(allowed, 0.0, NEG_INF).astype("float32")
        self.start = numpy.array([0.0 if p in "OBU" else NEG_INF for p in prefix], dtype="float32")
        self.end = numpy.array([0.0 if p in "OLU" else NEG_INF for p in prefix], dtype="float32")

    def decode(self, scores: numpy.ndarray, lengths: Sequence[int], probabilities: bool = True) -> List[numpy.ndarray]:
        """`scores`: the rows of all docs one after another (tokens x tags), probabilities or logits.

        Logits serve as they are: per-token log-softmax only subtracts a constant per token from
        every path, so the best path is the same.
        """
        n_tags = scores.shape[1]
        batch, longest = len(lengths), max(lengths) if lengths else 0
        logp = numpy.zeros((batch, max(longest, 1), n_tags), dtype="float32")
        offset = 0
        for i, length in enumerate(lengths):
            rows = scores[offset:offset + length]
            logp[i, :length] = numpy.log(rows + 1e-12) if probabilities else rows
            offset += length
        lengths_arr = numpy.asarray(lengths)
        score = logp[:, 0] + self.start
        back = numpy.empty((batch, max(longest, 1), n_tags), dtype="int32")
        keep = numpy.arange(n_tags, dtype="int32")
        for t in range(1, longest):
            candidates = score[:, :, None] + self.transitions[None]  # batch x previous x current
            best_previous = candidates.argmax(axis=1)
            new = numpy.take_along_axis(candidates, best_previous[:, None, :], axis=1)[:, 0] + logp[:, t]
            active = (t < lengths_arr)[:, None]
            score = numpy.where(active, new, score)
            back[:, t] = numpy.where(active, best_previous, keep)
        best = (score + self.end).argmax(axis=1)
        paths = numpy.empty((batch, max(longest, 1)), dtype="int32")
        rows = numpy.arange(batch)
        for t in range(longest - 1, -1, -1):
            paths[:, t] = best
            if t:
                best = back[rows, t, best]
        return [paths[i, :length] for i, length in enumerate(lengths)]


def make_token_ner(nlp: Language, name: str, model: Model, learn_rate_scale: float,
                   scorer: Optional[Callable]) -> TokenNER:
    return TokenNER(nlp.vocab, model, name, learn_rate_scale=learn_rate_scale, scorer=scorer)


def make_ner_scorer() -> Callable:
    """spaCy's own NER scorer (`spacy.ner_scorer.v1`), under the name `iob_ner.ner_scorer.v1` too: pipelines
    trained with earlier versions of this project name it in their config."""
    from spacy.pipeline.ner import make_ner_scorer as make_spacy_ner_scorer

    return make_spacy_ner_scorer()


# Register once: the project installs this module under an entry point, and a package built with
# `spacy package --code` carries its own copy; whichever is imported first serves both.
if not catalogue.check_exists("spacy", "internal_factories", "token_ner"):
    Language.factory(
        "token_ner",
        assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
        default_config={"model": Config().from_str(DEFAULT_MODEL)["model"], "learn_rate_scale": 1.0, "scorer": {"@scorers": "spacy.ner_scorer.v1"}},
        default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
    )(make_token_ner)
if not catalogue.check_exists("spacy", "scorers", "iob_ner.ner_scorer.v1"):
    from spacy.util import registry

    registry.scorers.register("iob_ner.ner_scorer.v1", func=make_ner_scorer)
