"""Training the pipeline: spaCy's loop made resumable, and what runs around it.

- `train.py`: `train_pipeline`, the `train` command's body: the checks before anything loads (steps, batch
  sizes, corpus, precision, config), the run in `training/checkpoints/` and its promotion to model-best and
  model-last;
- `calibration.py`: token_ner's entity scores calibrated on dev after training (the temperature, written
  into the component's cfg: spaCy keeps find_threshold beside spancat the same way);
- `loop.py`: `spacy.training.loop.train`, step for step, with checkpoints and exact resume;
- `checkpoints.py`: what a checkpoint holds (weights, Adam's moments, schedules, random states) and how it
  is written and read back;
- `precision.py`: `[system] precision` (bf16 or fp32), chosen per device;
- `config_file.py`: reading, generating and checking `configs/config.cfg`;
- `trackers.py`: `[training.logger]` for `--vars.logger` (spacy-loggers' MLflow and W&B loggers), local by
  default, continued on resume.

The speed-ups a config names (architectures, the after_init callback) are in `iob_ner.pipeline.layers`, so that plain
`spacy train` gets them too.
"""
