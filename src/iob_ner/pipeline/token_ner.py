"""`token_ner`: named entities by per-token classification over BILUO tags, decoded under constraints.

spaCy's transition-based `ner` makes a small GPU call and a device-to-host copy per transition; this
component scores every token of a batch in one matrix product (a softmax layer on the tok2vec or
transformer output, spaCy's `spacy.Tagger.v2` architecture) and then decodes the best *valid* BILUO
sequence of each document with a batched Viterbi pass on the CPU. It writes `doc.ents`, scores with
spaCy's `ents` scorer and serialises like any trainable pipe.

Entity confidence: the head defines a distribution over valid BILUO paths, p(path) ∝ exp(Σ_t logit[t, tag_t] / T)
under the Viterbi's own constraints. A forward-backward pass gives each predicted entity its exact marginal
probability (the mass of the paths that spell exactly that span and label), written, like spaCy's span
categorizer does, to `doc.spans[spans_key]` with `attrs["scores"]` (at the fitted temperature T) and
`attrs["scores_t1"]` (T = 1). The temperature is fitted on gold documents after training and kept in the
component's cfg (`iob_ner.training.calibration.fit_temperature`, as spaCy's find_threshold writes spancat's).

Dropout samples (optional, `fit_temperature(pipe, ..., samples=K)`): each scored doc also goes K times through the
transformer with its dropout on, and an entity's score is the mean of its marginals over those K passes
(Monte Carlo dropout): it ranks right against wrong entities better, at K more transformer passes per doc
with entities. Each doc's dropout is seeded from its text, so its scores do not depend on the docs batched
with it, nor on the run.

This file imports only spaCy, thinc and numpy, so that `spacy package --code` can ship it alone.
No `from __future__ import annotations`: spaCy validates `initialize` arguments from real types.
"""

import zlib
from itertools import islice
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import catalogue
import numpy
from spacy.attrs import ENT_IOB, ENT_TYPE, IS_SPACE, ORTH
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.pipeline.ner import make_ner_scorer as make_spacy_ner_scorer
from spacy.strings import hash_string
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, get_array_module, set_dropout_rate

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
# doc.spans key of the predicted entities with their probabilities (the factory's `spans_key` setting).
SPANS_KEY = "token_ner"
Entity = Tuple[int, int, str]  # token start, token end (exclusive), label


class DocPrediction(NamedTuple):
    """What `TokenNER.predict` finds for one doc, and `set_annotations` writes."""

    tag_ids: numpy.ndarray  # the Viterbi BILUO tag ids
    entities: List[Entity]  # the entities they spell, in order
    scores: Optional[numpy.ndarray]  # each entity's marginal probability at the component's temperature
    scores_t1: Optional[numpy.ndarray]  # the same at T = 1 (uncalibrated); both None when spans_key is None


class Lattice(NamedTuple):
    """One doc's forward-backward tables, in log space (tokens x tags).

    alpha[t, y]: log-sum of the scores of valid prefixes over tokens 0..t that end in tag y (emission at t
    included); beta[t, y]: log-sum over valid suffixes t+1.. that may follow y (the end constraint included);
    log_z: log-sum over all valid paths. `potentials` are the per-token scores logit / T.
    """

    potentials: numpy.ndarray
    alpha: numpy.ndarray
    beta: numpy.ndarray
    log_z: float


class TokenNER(TrainablePipe):
    """Per-token BILUO classifier that writes `doc.ents`."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "token_ner",
        *,
        learn_rate_scale: float = 1.0,
        scorer: Optional[Callable] = None,
        spans_key: Optional[str] = SPANS_KEY,
    ):
        self.vocab, self.model, self.name = vocab, model, name
        # The temperature lives in cfg, not in the config: it is fitted after training, like a weight, and
        # cfg travels with to_disk/from_disk, to_bytes and `spacy package`. Pipelines saved before it read 1.0.
        # `samples` > 0: scores are means over that many dropout passes, calibrated by `samples_temperature`.
        self.cfg: Dict[str, Any] = {"labels": [], "temperature": 1.0, "samples": 0, "samples_temperature": 1.0}
        self.learn_rate_scale = learn_rate_scale
        self.scorer = scorer
        # The key is a plain setting from the config (unlike spancat's cfg), so that a config override at
        # load time wins. None: write doc.ents only, and skip the forward-backward pass.
        self.spans_key = spans_key
        self._decoder: Optional[_BiluoDecoder] = None
        self._label_hashes: Tuple[Tuple[str, ...], Dict[int, int]] = ((), {})  # labels, and hash -> index
        self._nlp: Optional[Language] = None  # the factory's: dropout samples rerun its transformer

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

    @property
    def temperature(self) -> float:
        """The temperature of one-pass scores."""
        return float(self.cfg.get("temperature", 1.0))

    @temperature.setter
    def temperature(self, value: float) -> None:
        if not numpy.isfinite(value) or value <= 0:
            raise ValueError(f"{self.name}: the temperature must be a positive number, not {value!r}")
        self.cfg["temperature"] = float(value)

    @property
    def samples(self) -> int:
        """Dropout passes each score is averaged over (0: one pass, dropout off). Setting it to 0 at run time
        gives the one-pass scores, still calibrated: both temperatures are kept."""
        return int(self.cfg.get("samples", 0))

    @samples.setter
    def samples(self, value: int) -> None:
        if int(value) != value or value < 0:
            raise ValueError(f"{self.name}: samples must be a whole number >= 0, not {value!r}")
        self.cfg["samples"] = int(value)

    @property
    def score_temperature(self) -> float:
        """The temperature of the scores this component writes: that of its samples, or of one pass."""
        return float(self.cfg.get("samples_temperature", 1.0)) if self.samples else self.temperature

    def predict(self, docs: Iterable[Doc]) -> List[DocPrediction]:
        """The best valid BILUO tag ids of each doc, its entities and (with a spans_key) their probabilities."""
        docs = list(docs)
        lengths = [len(doc) for doc in docs]
        if not any(lengths):
            empty = None if not self.spans_key else numpy.zeros((0,), dtype="float64")
            return [DocPrediction(numpy.zeros((n,), dtype="i"), [], empty, empty) for n in lengths]
        flat, probabilities = self.model_scores(docs), self.outputs_probabilities()
        paths = self.decoder.decode(flat, lengths, probabilities=probabilities)
        entities = [self.decoder.entities(path) for path in paths]
        if not self.spans_key:
            return [DocPrediction(path, ents, None, None) for path, ents in zip(paths, entities)]
        logits: List[Any] = self.decoder.log_potentials(flat, lengths, probabilities=probabilities)
        if self.samples:  # the entities stay the dropout-free Viterbi ones: only their scores are sampled
            busy = [i for i, ents in enumerate(entities) if ents]
            for i, stack in zip(busy, self.sampled_logits([docs[i] for i in busy], self.samples)):
                logits[i] = stack
        raw = self.decoder.mean_entity_probabilities(logits, entities, temperature=1.0)
        # T does not move the Viterbi path (a positive scale), only the probabilities: one more pass if T != 1.
        temperature = self.score_temperature
        calibrated = (
            raw
            if temperature == 1.0
            else self.decoder.mean_entity_probabilities(logits, entities, temperature=temperature)
        )
        return [DocPrediction(*row) for row in zip(paths, entities, calibrated, raw)]

    def sampled_logits(self, docs: Sequence[Doc], samples: int) -> List[List[numpy.ndarray]]:
        """For each doc, `samples` logit matrices, from as many passes of the transformer with its dropout on.

        One doc at a time, its copies in one batch, under a seed drawn from its text (torch's RNG is restored
        afterwards): a doc's samples are the same whatever the docs around it. The docs are left as they were.
        """
        import torch  # here: only dropout samples need it; a packaged CNN pipeline loads without torch

        transformer = self.sampling_transformer()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        stacks = []
        for doc in docs:
            words, spaces = [t.text for t in doc], [bool(t.whitespace_) for t in doc]
            copies = [Doc(doc.vocab, words=words, spaces=spaces) for _ in range(samples)]
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(zlib.crc32(doc.text.encode("utf8", "surrogatepass")))
                output, _ = transformer.model.begin_update(copies)  # training mode: dropout on, no gradient kept
            transformer.set_annotations(copies, output)
            flat = self.model_scores(copies)
            stacks.append(self.decoder.log_potentials(flat, [len(doc)] * len(copies), self.outputs_probabilities()))
        return stacks

    def sampling_transformer(self):
        """The spacy-transformers component this head listens to, in the pipeline that made this component."""
        for _, pipe in self._nlp.pipeline if self._nlp is not None else []:
            if pipe is self:
                break
            if type(pipe).__name__ == "Transformer" and self.name in getattr(pipe, "listener_map", {}):
                return pipe
        raise ValueError(
            f"{self.name}: dropout samples need a transformer component that this head listens to "
            f"(spacy-transformers' TransformerListener), in the pipeline that holds it; set samples = 0"
        )

    def model_scores(self, docs: Sequence[Doc]) -> numpy.ndarray:
        """The head's output for every token of `docs`, one doc after another (tokens x tags), on the CPU,
        with whitespace tokens barred from beginning or ending an entity."""
        scores = self.model.predict(docs)
        xp = get_array_module(scores[0])
        flat = (
            self.model.ops.to_numpy(xp.concatenate(scores)) if len(scores) > 1 else self.model.ops.to_numpy(scores[0])
        )
        return self._no_space_boundaries(flat, docs)

    def _no_space_boundaries(self, flat: numpy.ndarray, docs: Sequence[Doc]) -> numpy.ndarray:
        """`flat` where whitespace tokens (a newline, the second of two spaces) cannot take B, L or U tags:
        they may sit inside an entity, never begin or end one (as in spaCy's transition ner). IOB training
        data has no such tokens, so the head scores them at random: "\n" came out as a Disease."""
        space = numpy.array([token.is_space for doc in docs for token in doc], dtype=bool)
        if not space.any():
            return flat
        flat = numpy.array(flat, copy=True)
        edges = [i for i, name in enumerate(self.tag_names) if name[0] in "BLU"]
        flat[numpy.ix_(space, edges)] = 0.0 if self.outputs_probabilities() else NEG_INF
        return flat

    def outputs_probabilities(self) -> bool:
        """spacy.Tagger.v2 with `normalize = false` predicts logits: cheaper, and Viterbi needs no softmax."""
        if self.model.has_ref("output_layer"):
            return bool(self.model.get_ref("output_layer").attrs.get("softmax_normalize", True))
        return True

    def set_annotations(self, docs: Iterable[Doc], predictions: Sequence[DocPrediction]) -> None:
        """`doc.ents`, and the same entities with their probabilities in `doc.spans[spans_key]`.

        The scores are a numpy array in the group's attrs, as spaCy's spancat stores them: they survive
        doc.to_bytes, DocBin and multiprocessing (msgpack carries numpy arrays).
        """
        for doc, prediction in zip(docs, predictions):
            spans = [Span(doc, start, end, label) for start, end, label in prediction.entities]
            doc.set_ents(spans, default="outside")
            if self.spans_key and prediction.scores is not None:
                doc.spans[self.spans_key] = SpanGroup(
                    doc,
                    name=self.spans_key,
                    spans=spans,
                    attrs={"scores": prediction.scores, "scores_t1": prediction.scores_t1},
                )

    def get_loss(self, examples: Iterable[Example], scores: List) -> Tuple[float, List]:
        """thinc's SequenceCategoricalCrossentropy (normalize=False) against the gold BILUO tags, tokens
        whose tag is missing masked out; `scores` are the softmax's probabilities, as in training."""
        validate_examples(examples, "TokenNER.get_loss")
        xp = self.model.ops.xp
        gold = xp.asarray(self.gold_tag_ids(examples))
        guesses = xp.concatenate(scores) if len(scores) else xp.zeros((0, len(self.tag_names)), dtype="f")
        if guesses.shape[0] != gold.shape[0]:
            raise ValueError(f"{self.name}: {guesses.shape[0]} scored tokens for {gold.shape[0]} gold tags")
        d_scores = guesses.copy()
        known = xp.nonzero(gold >= 0)[0]
        d_scores[known, gold[known]] -= 1.0
        d_scores[gold < 0] = 0.0
        loss = (d_scores**2).sum()  # thinc's figure for the loss: the squared gradient
        if xp.isnan(loss):
            raise ValueError(f"{self.name}: the loss is NaN")
        return float(loss), list(xp.split(d_scores, numpy.cumsum([len(s) for s in scores])[:-1].tolist()))

    def gold_tag_ids(self, examples: Sequence[Example]) -> numpy.ndarray:
        """The index in `tag_names` of each predicted token's gold tag, -1 where it is missing, over the
        examples in order: spaCy's `Example.get_aligned_ner`, read from the reference docs' arrays where
        both docs of an example have the same tokens (every document of a converted corpus; ~10x faster
        than aligning token by token every step), and from spaCy's alignment otherwise."""
        if self._label_hashes[0] != self.labels:
            self._label_hashes = (self.labels, {hash_string(label): i for i, label in enumerate(self.labels)})
        tags = _same_token_tags(examples, self._label_hashes[1])
        if any(found is None for found in tags):
            index = {name: i for i, name in enumerate(self.tag_names)}
            for i, example in enumerate(examples):
                if tags[i] is None:
                    aligned = example.get_aligned_ner()
                    tags[i] = numpy.asarray([-1 if t in (None, "-", "") else index[t] for t in aligned], dtype="int64")
        return numpy.concatenate(tags) if tags else numpy.zeros(0, dtype="int64")

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> None:
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
            label_sample.append(
                self.model.ops.asarray(
                    [[1.0 if tag == name else 0.0 for name in names] for tag in gold], dtype="float32"
                )
            )
        self.model.initialize(X=doc_sample, Y=label_sample)

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
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

    def token_confidence(self, docs: Sequence[Doc]) -> List[numpy.ndarray]:
        """For each token of each (already processed) doc: the probability of the tag its prediction gives
        it, O included, at the component's temperature (with `samples`: the mean over the dropout passes).

        The lowest value of a doc says how sure the head is of the whole doc: a token left outside any entity
        that probably belongs to one scores low too, which an entity's own probability cannot show. Needs
        the docs as `nlp.pipe` left them (the transformer's output on them): only the head runs again.
        """
        docs = list(docs)
        lengths = [len(doc) for doc in docs]
        if not any(lengths):
            return [numpy.zeros((0,)) for _ in docs]
        flat, probabilities = self.model_scores(docs), self.outputs_probabilities()
        paths = self.decoder.decode(flat, lengths, probabilities=probabilities)
        marginals = self._marginals(docs, flat, lengths)
        return [numpy.minimum(1.0, m[numpy.arange(len(path)), path]) for m, path in zip(marginals, paths)]

    def tag_probabilities(self, docs: Sequence[Doc]) -> List[numpy.ndarray]:
        """For each (already processed) doc, P(token t has tag y) (tokens x `tag_names`, rows summing to 1) over
        the valid BILUO paths, at the component's temperature (with `samples`: the mean over the dropout
        passes). What an audit of the annotations compares them with; needs the docs as `nlp.pipe` left them.
        """
        docs = list(docs)
        lengths = [len(doc) for doc in docs]
        if not any(lengths):
            return [numpy.zeros((0, len(self.tag_names))) for _ in docs]
        marginals = self._marginals(docs, self.model_scores(docs), lengths)
        # why renormalise: exp(alpha + beta - log_z) sums to 1 only up to rounding
        return [m / numpy.maximum(m.sum(axis=1, keepdims=True), 1e-12) for m in marginals]

    def _marginals(self, docs: List[Doc], flat: numpy.ndarray, lengths: List[int]) -> List[numpy.ndarray]:
        """Each doc's tag marginals (tokens x tags) from the head's scores `flat`; with `samples`, the mean of the
        marginals over that many dropout passes."""
        probabilities = self.outputs_probabilities()
        if not self.samples:
            logits = self.decoder.log_potentials(flat, lengths, probabilities=probabilities)
            return [_tag_marginals(lattice) for lattice in self.decoder.forward_backward(logits, self.temperature)]
        found = [numpy.zeros((0, len(self.tag_names))) for _ in docs]
        busy = [i for i, doc in enumerate(docs) if len(doc)]
        for i, stack in zip(busy, self.sampled_logits([docs[i] for i in busy], self.samples)):
            lattices = self.decoder.forward_backward(stack, self.score_temperature)
            found[i] = numpy.mean([_tag_marginals(lattice) for lattice in lattices], axis=0)
        return found

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()):
        self._decoder = None
        return super().from_bytes(bytes_data, exclude=exclude)

    def from_disk(self, path, *, exclude=tuple()):
        self._decoder = None
        return super().from_disk(path, exclude=exclude)


def _same_token_tags(examples: Sequence[Example], label_index: Dict[int, int]) -> List[Optional[numpy.ndarray]]:
    """`TokenNER.gold_tag_ids` of each example from its reference's ENT_IOB/ENT_TYPE arrays, all examples at
    once (two array reads a doc, the rest over the batch); None for an example where that would not be what
    `Example.get_aligned_ner` gives: other tokens in its two docs, a whitespace token (spaCy makes a missing
    one O), an I without an entity of its label before it, or a label not in `label_index` (hash -> index)."""
    tags: List[Optional[numpy.ndarray]] = [None] * len(examples)
    kept = [i for i, eg in enumerate(examples) if len(eg.predicted) == len(eg.reference)]
    sizes = numpy.asarray([len(examples[i].predicted) for i in kept], dtype="int64")
    if not sizes.sum():
        for i in kept:
            tags[i] = numpy.zeros(0, dtype="int64")
        return tags
    ours = numpy.concatenate([examples[i].predicted.to_array([ORTH, IS_SPACE]).reshape(-1, 2) for i in kept])
    gold = numpy.concatenate([examples[i].reference.to_array([ORTH, ENT_IOB, ENT_TYPE]).reshape(-1, 3) for i in kept])
    ends = numpy.cumsum(sizes)
    doc_of = numpy.searchsorted(ends, numpy.arange(ends[-1]), side="right")
    ids = _biluo_ids(gold[:, 1].astype("int64"), gold[:, 2], ends, doc_of, label_index)

    def docs_where(mask: numpy.ndarray) -> numpy.ndarray:
        found = numpy.zeros(len(kept), dtype=bool)
        found[doc_of[mask]] = True
        return found

    other_tokens, annotated = docs_where(ours[:, 0] != gold[:, 0]), docs_where(gold[:, 1] != 0)
    unreadable = docs_where(ours[:, 1] != 0) | docs_where(ids == -2)
    for k, (i, end, size) in enumerate(zip(kept, ends.tolist(), sizes.tolist())):
        if other_tokens[k]:
            continue
        if not annotated[k]:  # spaCy: no ENT_IOB annotation at all, every tag missing
            tags[i] = numpy.full(size, -1, dtype="int64")
        elif not unreadable[k]:
            tags[i] = ids[end - size : end]
    return tags


def _biluo_ids(
    iob: numpy.ndarray, types: numpy.ndarray, ends: numpy.ndarray, doc_of: numpy.ndarray, label_index: Dict[int, int]
):
    """Tag ids from ENT_IOB (0 missing, 1 I, 2 O, 3 B) and ENT_TYPE of docs laid end to end (doc k ends
    before index ends[k]; doc_of: each token's doc): -1 missing, and -2 over a doc that cannot be read this
    way (see _same_token_tags)."""
    size = len(iob)
    starts = numpy.concatenate([[0], ends[:-1]]).astype("int64")
    first, last = numpy.zeros(size, dtype=bool), numpy.zeros(size, dtype=bool)
    first[starts[starts < size]] = True
    last[ends[ends > 0] - 1] = True
    inside, begins = iob == 1, iob == 3
    entity = inside | begins
    follows = numpy.zeros(size, dtype=bool)  # the token before is of an entity of the same type, same doc
    follows[1:] = entity[:-1] & (types[1:] == types[:-1])
    follows &= ~first
    goes_on = numpy.zeros(size, dtype=bool)  # the next token continues this entity
    goes_on[:-1] = inside[1:]
    goes_on &= ~last
    known, kind = _label_ids(types[entity], label_index)
    # tag_names: O, then B, I, L, U of each label: B 0 (goes on), I 1 (inside, goes on), L 2, U 3 (ends there)
    offset = numpy.where(goes_on, inside, 2 + begins)
    tags = numpy.where(iob == 2, 0, -1)
    tags[entity] = 1 + 4 * kind + offset[entity]
    bad = inside & ~follows
    bad[numpy.flatnonzero(entity)[~known]] = True
    tags[numpy.isin(doc_of, doc_of[bad])] = -2
    return tags


def _label_ids(types: numpy.ndarray, label_index: Dict[int, int]) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """For each ENT_TYPE hash: whether `label_index` knows it, and its label index (0 where not)."""
    if not label_index:
        return numpy.zeros(len(types), dtype=bool), numpy.zeros(len(types), dtype="int64")
    hashes = numpy.fromiter(label_index.keys(), dtype="uint64", count=len(label_index))
    ids = numpy.fromiter(label_index.values(), dtype="int64", count=len(label_index))
    order = numpy.argsort(hashes)
    hashes, ids = hashes[order], ids[order]
    where = numpy.searchsorted(hashes, types).clip(0, len(hashes) - 1)
    return hashes[where] == types, ids[where]


def _tag_marginals(lattice: Lattice) -> numpy.ndarray:
    """P(token t has tag y) over the lattice's paths (tokens x tags)."""
    return numpy.exp(lattice.alpha + lattice.beta - lattice.log_z) if len(lattice.alpha) else lattice.alpha


def _entities_from_biluo(tags: Sequence[str]) -> List[Entity]:
    entities, start = [], 0
    for i, tag in enumerate(tags):
        prefix = tag[0]
        if prefix == "B":
            start = i
        elif prefix == "L":
            entities.append((start, i + 1, tag[2:]))
        elif prefix == "U":
            entities.append((i, i + 1, tag[2:]))
    return entities


def _logsumexp(x: numpy.ndarray, axis: int) -> numpy.ndarray:
    """log Σ exp along `axis`, stable: the max is taken out first (x holds NEG_INF, never -inf, so no NaN)."""
    top = x.max(axis=axis, keepdims=True)
    return numpy.squeeze(top, axis=axis) + numpy.log(numpy.exp(x - top).sum(axis=axis))


class _MaskedLogSumExp:
    """out[:, j] = log Σ_{i : allowed[i, j]} exp(x[:, i]), exactly, in O(tags) per row rather than O(tags²).

    BILUO constraints have few distinct columns: O/B-*/U-* all follow {O, L-*, U-*}, and I-X/L-X follow
    {B-X, I-X}. So the sums are taken once per distinct predecessor set, each with its own max (no
    underflow, unlike one max per row times a 0/1 matrix product), and copied to the tags that share it.
    Sets of equal size are stacked, so each time step costs a few numpy calls whatever the labels.
    """

    def __init__(self, allowed: numpy.ndarray) -> None:
        patterns, group_of = numpy.unique(allowed.T, axis=0, return_inverse=True)
        self.group_of = numpy.asarray(group_of).reshape(-1)
        self.n_groups = len(patterns)
        sizes = patterns.sum(axis=1)
        self.buckets = []  # (group ids, their predecessor indices: groups x size)
        for size in numpy.unique(sizes):
            ids = numpy.flatnonzero(sizes == size)
            self.buckets.append((ids, numpy.stack([numpy.flatnonzero(patterns[g]) for g in ids]) if size else None))

    def __call__(self, x: numpy.ndarray) -> numpy.ndarray:
        values = numpy.empty((x.shape[0], self.n_groups), dtype=x.dtype)
        for ids, predecessors in self.buckets:
            values[:, ids] = NEG_INF if predecessors is None else _logsumexp(x[:, predecessors], axis=2)
        return values[:, self.group_of]


def _length_chunks(sizes: Sequence[int], width: int, max_cells: int) -> List[List[int]]:
    """Indices into `sizes`, longest first, in groups whose padded table (docs x longest x width) stays near
    `max_cells`: memory stays bounded on long documents, and similar lengths waste little padding."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    chunks = []
    while order:
        take = max(1, max_cells // max(1, sizes[order[-1]] * width))
        chunks.append(order[-take:])
        order = order[:-take]
    return chunks


def _stack(logits: Union[numpy.ndarray, Sequence[numpy.ndarray]]) -> List[numpy.ndarray]:
    """A doc's logit matrices: one (one pass), or a list of them (dropout samples)."""
    return [logits] if isinstance(logits, numpy.ndarray) else list(logits)


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
        self.names = list(names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.transitions = numpy.where(allowed, 0.0, NEG_INF).astype("float32")
        self.start = numpy.array([0.0 if p in "OBU" else NEG_INF for p in prefix], dtype="float32")
        self.end = numpy.array([0.0 if p in "OLU" else NEG_INF for p in prefix], dtype="float32")
        # The forward-backward pass uses the same constraints: hard (0 or NEG_INF), so a path's score is the
        # sum of its emissions, and the sums over predecessors/successors are masked log-sum-exps.
        self._into = _MaskedLogSumExp(allowed)  # over the tags each tag may follow
        self._out_of = _MaskedLogSumExp(allowed.T)  # over the tags that may follow each tag

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
            rows = scores[offset : offset + length]
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
            # Each row less its best: the same path, and float32 sums stay small. Unshifted, a 53,000-token
            # doc summed to 282,009 (steps of 0.03 in float32) and 31 of its tags differed from float64's.
            new -= new.max(axis=1, keepdims=True)
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

    def entities(self, tag_ids: Sequence[int]) -> List[Entity]:
        """(start, end, label) of the entities a valid tag id sequence spells."""
        return _entities_from_biluo([self.names[i] for i in tag_ids])

    @staticmethod
    def log_potentials(
        scores: numpy.ndarray, lengths: Sequence[int], probabilities: bool = True
    ) -> List[numpy.ndarray]:
        """`decode`'s input as one float64 (tokens x tags) logit matrix per doc: logs of probabilities as `decode`
        takes them; logits as they are (per-token log-softmax differs by a constant per token: same distribution)."""
        rows = numpy.log(scores.astype("float64") + 1e-12) if probabilities else scores.astype("float64")
        return numpy.split(rows, numpy.cumsum(lengths)[:-1]) if len(lengths) else []

    def forward_backward(self, logits: Sequence[numpy.ndarray], temperature: float = 1.0) -> List[Lattice]:
        """The forward-backward tables of each doc (batched, padded like `decode`; float64, log space)."""
        lengths = numpy.array([len(x) for x in logits], dtype="int64")
        batch, longest, n_tags = len(logits), max(int(lengths.max(initial=0)), 1), len(self.names)
        potentials = numpy.zeros((batch, longest, n_tags))
        for i, x in enumerate(logits):
            if len(x):  # why: subtracting each token's max changes no path's probability, keeps sums near 0
                potentials[i, : len(x)] = (x - x.max(axis=1, keepdims=True)) / temperature
        start, end = self.start.astype("float64"), self.end.astype("float64")
        alpha, beta = numpy.empty_like(potentials), numpy.empty_like(potentials)
        alpha[:, 0] = potentials[:, 0] + start
        for t in range(1, longest):  # rows past a doc's end are filled but never read
            alpha[:, t] = self._into(alpha[:, t - 1]) + potentials[:, t]
        beta[:, longest - 1] = end
        last = (lengths - 1)[:, None]
        for t in range(longest - 2, -1, -1):  # a doc's last token gets `end`; the earlier ones look ahead
            beta[:, t] = numpy.where(t < last, self._out_of(potentials[:, t + 1] + beta[:, t + 1]), end)
        final = alpha[numpy.arange(batch), numpy.maximum(lengths - 1, 0)] + end
        log_z = _logsumexp(final, axis=1)
        return [
            Lattice(potentials[i, :n], alpha[i, :n], beta[i, :n], float(log_z[i]) if n else 0.0)
            for i, n in enumerate(lengths)
        ]

    def span_log_probability(self, lattice: Lattice, start: int, end: int, label: str) -> float:
        """log P(tokens [start, end) are exactly one `label` entity): U-label, or B-label I-label.. L-label.

        Those tags are then fixed, the rest is free: alpha at the first tag, the fixed emissions inside
        (allowed transitions score 0), beta at the last tag.
        """
        if end - start == 1:
            u = self.index[f"U-{label}"]
            return float(lattice.alpha[start, u] + lattice.beta[start, u] - lattice.log_z)
        b, i, l = self.index[f"B-{label}"], self.index[f"I-{label}"], self.index[f"L-{label}"]
        inside = lattice.potentials[start + 1 : end - 1, i].sum()
        return float(
            lattice.alpha[start, b] + inside + lattice.potentials[end - 1, l] + lattice.beta[end - 1, l] - lattice.log_z
        )

    def span_probability(self, lattice: Lattice, start: int, end: int, label: str) -> float:
        return min(1.0, float(numpy.exp(self.span_log_probability(lattice, start, end, label))))

    def mean_entity_probabilities(
        self,
        logits: Sequence[Any],
        entities: Sequence[Sequence[Entity]],
        temperature: float = 1.0,
        max_cells: int = 8_000_000,
    ) -> List[numpy.ndarray]:
        """`entity_probabilities` where `logits[i]` may also be a list of matrices (dropout samples of doc i):
        the mean of each entity's marginals over them."""
        stacks = [_stack(x) for x in logits]
        found = self.entity_probabilities(
            [x for stack in stacks for x in stack],
            [ents for stack, ents in zip(stacks, entities) for _ in stack],
            temperature=temperature,
            max_cells=max_cells,
        )
        means, at = [], 0
        for stack, ents in zip(stacks, entities):
            means.append(numpy.mean(found[at : at + len(stack)], axis=0) if len(ents) else numpy.zeros((0,)))
            at += len(stack)
        return means

    def entity_probabilities(
        self,
        logits: Sequence[numpy.ndarray],
        entities: Sequence[Sequence[Entity]],
        temperature: float = 1.0,
        max_cells: int = 8_000_000,
    ) -> List[numpy.ndarray]:
        """The marginal probability of each given entity (e.g. the Viterbi path's) of each doc, at `temperature`.

        Docs without entities skip the forward-backward pass (most sentences of a corpus have none); the
        others go in length-sorted chunks of about `max_cells` cells per float64 table (64 MB by default).
        """
        found = [numpy.zeros((len(ents),), dtype="float64") for ents in entities]
        busy = [i for i, ents in enumerate(entities) if len(ents)]
        for positions in _length_chunks([len(logits[i]) for i in busy], len(self.names), max_cells):
            chunk = [busy[j] for j in positions]
            for i, lattice in zip(chunk, self.forward_backward([logits[i] for i in chunk], temperature)):
                found[i][:] = [self.span_probability(lattice, *entity) for entity in entities[i]]
        return found


def make_token_ner(
    nlp: Language,
    name: str,
    model: Model,
    learn_rate_scale: float,
    scorer: Optional[Callable],
    spans_key: Optional[str] = SPANS_KEY,
) -> TokenNER:
    pipe = TokenNER(nlp.vocab, model, name, learn_rate_scale=learn_rate_scale, scorer=scorer, spans_key=spans_key)
    # why keep nlp (as spaCy's entity_ruler does): dropout samples rerun the transformer this head listens to
    pipe._nlp = nlp
    return pipe


def make_ner_scorer() -> Callable:
    """spaCy's own NER scorer (`spacy.ner_scorer.v1`), under the name `iob_ner.ner_scorer.v1` too: pipelines
    trained with earlier versions of this project name it in their config."""
    return make_spacy_ner_scorer()


# Register once: the project installs this module under an entry point, and a package built with
# `spacy package --code` carries its own copy; whichever is imported first serves both.
if not catalogue.check_exists("spacy", "internal_factories", "token_ner"):
    Language.factory(
        "token_ner",
        assigns=["doc.ents", "token.ent_iob", "token.ent_type", "doc.spans"],
        default_config={
            "model": Config().from_str(DEFAULT_MODEL)["model"],
            "learn_rate_scale": 1.0,
            "scorer": {"@scorers": "spacy.ner_scorer.v1"},
            "spans_key": SPANS_KEY,
        },
        default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
    )(make_token_ner)
if not catalogue.check_exists("spacy", "scorers", "iob_ner.ner_scorer.v1"):
    from spacy.util import registry

    registry.scorers.register("iob_ner.ner_scorer.v1", func=make_ner_scorer)
