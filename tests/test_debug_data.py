"""debug-data fails the workflow on the errors `spacy debug data` reports, not on its size advice."""
from debug_data import classify

REPORT = """\x1b[1m
============================ Data file validation ============================\x1b[0m
\x1b[38;5;2m✔ Corpus is loadable\x1b[0m
\x1b[38;5;1m✘ Low number of examples to train a new pipeline (42)\x1b[0m
{errors}\x1b[38;5;2m✔ 3 checks passed\x1b[0m
\x1b[38;5;1m✘ {n} error{s}\x1b[0m
"""


def test_size_advice_alone_is_not_an_error():
    errors, advice = classify(REPORT.format(errors="", n=1, s=""))
    assert errors == [] and advice == ["Low number of examples to train a new pipeline (42)"]


def test_data_errors_are_errors():
    bad = "\x1b[38;5;1m✘ 3 entity span(s) with leading or trailing whitespace\x1b[0m\n"
    errors, _ = classify(REPORT.format(errors=bad, n=2, s="s"))
    assert errors == ["3 entity span(s) with leading or trailing whitespace"]
