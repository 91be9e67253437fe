"""The registered architectures and training callback that make the transformer pipeline train faster.

spacy-transformers' pattern: behaviour comes in through names in the config, so that `python -m spacy train`
with the generated config gets all of it, and nothing is patched on a class for the whole process.

- `iob_ner.TransformerModel.v1` (transformer.py): spacy-transformers' TransformerModel, its wordpieces read
  from a cache while training (wordpieces.py), its parameters updated by thinc's Adam in one fused torch call
  (fused_adam.py), its forward under bf16 autocast where `[system] precision` asks for it;
- `iob_ner.TransformerListener.v1` (pooling.py): spacy-transformers' listener, its pooling done once per batch;
- `iob_ner.training_speedups.v1` (speedups.py): the `[initialize] after_init` callback that sets the
  precision, tokenizes the training corpus into the cache and says what the run gets.

Each is the same arithmetic as spacy-transformers' own (tests/pipeline/layers/: test_wordpieces.py,
test_pooling.py, test_fused_adam.py); tests/pipeline/layers/test_layers.py fails with a clear message when
the spacy-transformers or thinc internals they mirror change shape (docs/training.md#upgrading-spacy-transformers-or-thinc).
"""
