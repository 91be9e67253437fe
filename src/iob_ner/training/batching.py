"""Training batches of similar wordpiece length, on spaCy's own batcher.

Every row of a transformer batch is padded to its longest, and a padded position costs the arithmetic of a
real one. spaCy's `spacy.batch_by_words.v1` takes documents in corpus order: on NCBI-disease (sentences of
3 to 100+ words) half of every 500-word batch's wordpiece positions were padding. spaCy's
`spacy.batch_by_padded.v1` sorts each buffer of documents by a length and fills a batch up to a padded size
(rows x the longest row); counted in spaCy tokens (its default) a quarter of the positions stay padding,
since words split into very different numbers of wordpieces (a gene name into many). Its `get_length`,
`iob_ner.wordpiece_count.v1`, counts in the transformer's own wordpieces: 7 % padding
(benchmarks/arithmetic).
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from spacy.util import registry

# Counts kept at most (one int per distinct text); past it, a text is counted again at each epoch.
MAX_COUNTS = 2_000_000


@registry.misc("iob_ner.wordpiece_count.v1")
# the dict default: spaCy's fill-config writes it into the generated config (a None would be written as null);
# it is only read, never changed
def make_wordpiece_count(name: str, tokenizer_config: Dict[str, Any] = {"use_fast": True}) -> Callable[[Any], int]:  # noqa: B006
    """The number of wordpieces (special tokens included) the transformer `name` makes of an Example's or
    Doc's text, each text tokenized once. The tokenizer is loaded as spacy-transformers loads it."""
    # here, not at the top: spaCy loads the entry points of its `misc` registry where a blank pipeline
    # resolves its config, and convert runs without torch (scripts/convert.py)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name, **tokenizer_config)
    counts: Dict[int, int] = {}

    def wordpiece_count(item: Any) -> int:
        text = item.text
        key = hash(text)
        count = counts.get(key)
        if count is None:
            count = len(tokenizer(text, verbose=False)["input_ids"])
            if len(counts) < MAX_COUNTS:
                counts[key] = count
        return count

    return wordpiece_count
