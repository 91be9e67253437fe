"""Token-per-line IOB files (UBIAI exports, CoNLL-style corpora), one module per job:

- `reader`: `read_iob` (streaming, with every repair counted), `located_documents`, `check_read_options`;
- `writer`: `write_iob`, the UBIAI export shape;
- `report`: `ReadReport`, what a read found and repaired;
- `layout`: a file's separator, columns, BOM, line endings and -DOCSTART- lines, sniffed before parsing;
- `tags`: the tag schemes (decoding tags into `Span`s, `spans_to_tags` encoding them);
- `documents`: `IobDocument`, the document builder and the length limits that cut long input.
"""
