"""training/report.md, its plots and training/errors.html, one module per job:

- `write`: `write_report`, everything of a training folder written all or none;
- `inputs`: the metrics (checked fresh), the training log, the test documents, the model's labels;
- `render`: report.md's text; `tables`: its Markdown tables and the frames behind them;
- `plots`: the PNG plots, and `pyplot()`, the one matplotlib setup of the package;
- `errors_html`: errors.html, gold beside predicted.
"""
