"""predict's Ray engine: the same pipeline on Ray actors, over millions of documents, resumably.

    python scripts/predict.py MODEL INPUT OUTPUT.jsonl --engine ray [--actors N] [--shard-size 10240]

The driver reads the input with predict's own reader, so bad documents are named, skipped and counted
exactly as predict does, and cuts the stream into shards of `shard_size` documents (a whole number of
predict's batches, so each actor sees the very batches predict would: padding, and hence every score,
is the same). A window of shards at a time goes through Ray Data: map_batches with PipelineActor, which
loads the pipeline once per actor (one GPU each where the cluster has GPUs, else one CPU each). Each
finished shard is written whole (atomically) under `.<output name>.shards/` beside the output, with a
marker holding its counts; a rerun skips the shards that are complete. The end concatenates the shards
in order through predict's own writer: the outputs are byte for byte those of `--engine local`.

Ray starts in this process's machine when no cluster is named (no setup); with `--ray-address` or
RAY_ADDRESS it joins that cluster. The code the actors need (the iob_ner package) travels in
their runtime environment; the pipeline must be a folder every node sees or an installed package (the
wheel of `spacy project run package`, e.g. in the job's runtime_env pip list: README, "Ray").

One module per job: `driver` (`predict_ray`: shards through Ray Data, outputs through predict's writer),
`actor` (`PipelineActor`, the pipeline in each Ray worker), `shards` (`ShardStore`, the finished shards on
disk, and the input's `stat_signature`), `cluster` (joining or starting Ray, the code the workers need).
Only `cluster` and `driver` import Ray, inside the functions that talk to it: Ray is optional
(requirements-ray.txt).
"""
