"""The bottom layer: the ledger (SQLAlchemy models, money as integer minor units), its
migrations, configuration, the one clock, the error base and the chromadb recall. It imports no
other plixo package, so every layer can build on it.
"""
