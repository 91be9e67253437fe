"""Experiments over the corpus: k-fold cross-validation (`crossval`) and the data curve (`data_curve`)."""
