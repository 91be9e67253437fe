"""IOB import, a token-classification NER component and reports for the spaCy NER project template."""
