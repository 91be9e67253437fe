"""What several test files build alike: paths and script loading (paths), tiny pipelines (pipelines), input
files (data), a copy of the project run by weasel (project), a live server (serving), a headless browser
(browser). Importable as `support` (pyproject's [tool.pytest.ini_options] pythonpath), so that a test module
imports these and never another test module."""
