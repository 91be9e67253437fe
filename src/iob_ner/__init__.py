"""The library of the spaCy transformer NER project template: IOB import, the token_ner component, training,
evaluation, reports, inference and serving. The commands in scripts/ are thin layers over it."""

import sys

# project.yml makes every command depend on this folder as a whole (weasel hashes a folder's files), so
# that a change to any module reruns what uses it. Bytecode caches written here by a first import would
# change that hash without any change to the code, and rerun training: so the modules of this package
# (all imported after this line) write none. Only this file's own cache is written, once.
sys.dont_write_bytecode = True
